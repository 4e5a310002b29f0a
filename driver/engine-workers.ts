/**
 * The engine only at the edges of a batch's jobs: a short-lived worker process per launch (checks, create the stack,
 * up) and per finish (refresh, destroy, record), each exiting when its phase is done. The Pulumi Node SDK keeps
 * global state (one inline program per process), so the phases cannot share the batch's process; between them the
 * batch waits on the job in its own event loop, holding nothing of the engine (driver/batch-scheduler.ts).
 *
 * A worker gets the job's flags through its environment (never argv: a command line is readable by every user of the
 * machine) and its request as JSON on stdin; it prints its outcome as the last line of stdout. A worker whose batch is
 * killed finishes its phase — the up it started reaches "running" in the job's record, a destroy completes — so the
 * batch started again finds a consistent job to adopt.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { PACKAGE_ROOT } from "../common/paths";
import { BATCH_ID_ENV, WORKER_ARGS_ENV } from "./worker-env";
import { NDA_ENV } from "./nda-credentials";
import type { Ending, JobContext } from "./job-phases";
import type { JobResult } from "./run";
import type { Owner } from "./owner";

/** The CLI entry a worker runs: bin/cloudcompute.js (the prebuilt CLI, or tsx from the sources). */
export const CLI_ENTRY = path.join(PACKAGE_ROOT, "bin", "cloudcompute.js");

/** The hidden `run` flag that makes a process an engine worker. */
export const ENGINE_WORKER_FLAG = "engine-worker";

export interface LaunchRequest {
  op: "launch";
  subject: string;
  jobId: string;
  launchId: string;
  attempt: number;
  retryOf?: string;
  /** The last retry of a spot job runs on-demand. */
  onDemand?: boolean;
  /** The batch process, which owns the job while it runs (record and stack tags name it, so gc leaves it alone). */
  owner: Owner;
}

export interface FinishRequest {
  op: "finish";
  context: JobContext;
  ending: Ending;
}

export type EngineRequest = LaunchRequest | FinishRequest;

/**
 * What a launch comes to: the job runs, it ended already (a failed up, interrupted), it was refused by the worker
 * (nothing created), or the worker died without a word (lost: what it created, if anything, is the batch's to tear down).
 */
export type LaunchReply =
  | { kind: "running"; context: JobContext }
  | { kind: "ended"; result: JobResult }
  | { kind: "refused"; exitCode: number; message: string }
  | { kind: "lost"; message: string };
export type FinishReply = { kind: "finished"; result: JobResult } | { kind: "refused"; exitCode: number; message: string } | { kind: "lost"; message: string };

/** The two engine phases of a batch's jobs. Engine workers in production; a benchmark may stand in for them. */
export interface JobEdges {
  launch(request: LaunchRequest, signal: AbortSignal, log: (line: string) => void): Promise<LaunchReply>;
  finish(request: FinishRequest, log: (line: string) => void): Promise<FinishReply>;
}

export interface EngineWorkerOptions {
  batchId: string;
  /** The job flags every worker gets (config file, overrides, platform, ...). */
  workerArgs: string[];
  /** One subject's own flags (its subjects-file inputs), besides `--subject`. */
  subjectArgs?: (subject: string) => string[];
  /** Each subject's worker output is appended to `<logDir>/<subject>.log`. */
  logDir: string;
}

/** Engine workers as processes of this package's CLI. */
export function engineWorkerEdges(options: EngineWorkerOptions): JobEdges {
  return {
    launch: (request, signal, log) => runWorker<LaunchReply>(options, request.subject, request, log, signal),
    finish: (request, log) => runWorker<FinishReply>(options, request.context.spec.subject, request, log),
  };
}

function runWorker<T extends { kind: string }>(options: EngineWorkerOptions, subject: string, request: EngineRequest, log: (line: string) => void, signal?: AbortSignal): Promise<T> {
  const logFile = fs.createWriteStream(path.join(options.logDir, `${subject}.log`), { flags: "a" });
  const args = [...options.workerArgs, "--subject", subject, ...(options.subjectArgs?.(subject) ?? [])];
  // A finish needs no input, so no NDA credentials: the engine it starts inherits its environment.
  const env: NodeJS.ProcessEnv = { ...process.env, CLOUDCOMPUTE_WORKER: "1", [BATCH_ID_ENV]: options.batchId, [WORKER_ARGS_ENV]: JSON.stringify(args) };
  if (request.op === "finish") for (const name of Object.values(NDA_ENV)) delete env[name];
  const child = spawn(process.execPath, [CLI_ENTRY, "run", `--${ENGINE_WORKER_FLAG}`], {
    stdio: ["pipe", "pipe", "pipe"],
    env,
    // Its own process group: a terminal's Ctrl-C reaches only the batch, which forwards exactly one SIGINT (a
    // second one would make a worker leave without cleaning up).
    detached: true,
  });
  child.stdin.on("error", () => undefined);
  child.stdin.end(JSON.stringify(request));
  const interrupt = () => child.exitCode === null && child.kill("SIGINT");
  if (signal?.aborted) interrupt();
  signal?.addEventListener("abort", interrupt, { once: true });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  let partial = "";
  let lastError: string | undefined;
  child.stderr.on("data", (chunk: Buffer) => {
    logFile.write(chunk);
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.startsWith("error: ")) lastError = line.slice("error: ".length);
      if (line.trim()) log(line);
    }
  });
  return new Promise<T>((resolve) => {
    let settled = false;
    const lost = (why: string) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", interrupt);
      logFile.end();
      resolve({ kind: "lost", message: why } as unknown as T);
    };
    // No worker at all (ENOMEM, EAGAIN): the job's phase did not happen; never an uncaught error in the batch.
    child.on("error", (err) => lost(`the engine worker could not run: ${err.message}`));
    child.on("close", (code, sig) => {
      if (settled) return;
      const reply = lastJsonLine<T>(stdout);
      if (!reply) return lost(`${lastError ? `${lastError}; ` : ""}the engine worker exited with ${code ?? sig} without a result; see ${path.join(options.logDir, `${subject}.log`)}`);
      settled = true;
      signal?.removeEventListener("abort", interrupt);
      logFile.end();
      resolve(reply);
    });
  });
}

function lastJsonLine<T extends { kind: string }>(stdout: string): T | undefined {
  const line = stdout.trim().split("\n").pop();
  if (!line) return undefined;
  try {
    const value = JSON.parse(line) as T;
    return typeof value?.kind === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Read a worker's request from stdin (the batch writes it and closes the pipe). */
export async function readEngineRequest(): Promise<EngineRequest> {
  let text = "";
  for await (const chunk of process.stdin) text += chunk.toString();
  const request = JSON.parse(text) as { op?: unknown } | null;
  if (request?.op !== "launch" && request?.op !== "finish") throw new Error(`an engine worker's request must be a launch or a finish, not ${JSON.stringify(request?.op)}`);
  return request as EngineRequest;
}
