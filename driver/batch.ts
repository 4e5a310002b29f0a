/**
 * Batch: one job per subject, each in its own worker process (the Pulumi Node SDK keeps global state: one inline
 * program per process), at most `concurrency` at a time. Subjects that already have a success marker are skipped
 * unless `rerun`. One failure does not stop the others; an interrupt interrupts every worker, and each destroys its
 * own job's resources before the batch exits.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { jobLayout, resultsDirName } from "../job/layout";
import { parseCompletionMarker, parseResultsPointer } from "../job/records";
import type { OutputLayout } from "../job/spec";
import { BadInputError, ExitCode } from "./errors";
import { readSubjectsList } from "./subjects";
import { cloudcomputeHome, PACKAGE_ROOT } from "../common/paths";
import { seconds } from "../common/time";
import { readRecord } from "./s3";
import { BATCH_ID_ENV, SKIP_SUCCEEDED_ENV, WORKER_ARGS_ENV } from "./worker-env";
import type { JobResult } from "./run";
import type { ResolvedJob } from "./options";
import { formatS3Url } from "../job/s3url";
import { formatCost, table } from "./summary";
import { isLeaseRefusal, liveLeaseOf } from "./lease";

export interface BatchOptions {
  subjects: string[];
  concurrency: number;
  rerun: boolean;
  /** The output prefix shared by the batch's jobs (where success markers are looked for). */
  outputPrefix: string;
  /** The batch's output layout: where each subject's results (and results pointer) are. */
  outputLayout?: OutputLayout;
  /** Arguments for each worker besides `--subject` (config file, overrides, platform, ...). */
  workerArgs: string[];
  /** Arguments for one subject's worker only (its subjects-file inputs); they travel with workerArgs, never in argv. */
  subjectArgs?: (subject: string) => string[];
  signal: AbortSignal;
  stream?: NodeJS.WriteStream;
}

export interface BatchEntry {
  subject: string;
  /** held: another driver runs the subject (its lease); nothing was started for it here. */
  outcome: JobResult["outcome"] | "skipped" | "held";
  exitCode: number;
  jobId?: string;
  reason?: string;
  message?: string;
  /** The earlier successful job, for skipped subjects. */
  succeededBefore?: string;
  costUsd?: number;
  seconds?: number;
  logPath?: string;
}

export interface BatchResult {
  batchId: string;
  entries: BatchEntry[];
  exitCode: number;
  summaryPath: string;
}

/** Subjects from a file: one per line (or the first column of a CSV/TSV), `#` comments and blank lines ignored. */
export function readSubjectsFile(file: string): string[] {
  return readSubjectsList(file).subjects;
}

/**
 * Refuse a batch whose subjects share a results folder (layout bids: `01` and `sub-01`, `HCP_1` and `HCP1`): their
 * jobs would replace each other's results, so the batch would not start (the agent refuses it too, after the run).
 */
export function checkDistinctFolders(subjects: string[], layout: OutputLayout = "subject"): void {
  const byFolder = new Map<string, string[]>();
  for (const subject of subjects) byFolder.set(resultsDirName(subject, layout), [...(byFolder.get(resultsDirName(subject, layout)) ?? []), subject]);
  const shared = [...byFolder].filter(([, names]) => names.length > 1).map(([folder, names]) => `${names.join(", ")} → ${folder}/`);
  if (shared.length > 0) {
    throw new BadInputError(`subjects share a results folder with layout ${layout}, so their results would replace each other: ${shared.join("; ")}; list one of each, or use layout subject`);
  }
}

/**
 * The job whose results the subject holds, if they are a success: the subject's results pointer names it and says
 * its promotion completed, and that job's marker — parsed, of this subject and this launch — says it succeeded.
 * Anything else (no pointer, a promotion cut off, a failed or foreign marker) means the subject still needs a run.
 */
export async function findSuccess(outputPrefix: string, subject: string, layout: OutputLayout = "subject"): Promise<string | undefined> {
  const layoutOf = (jobId: string) => jobLayout({ jobId, subject, outputs: { prefix: outputPrefix, layout } });
  const pointer = await readRecord(layoutOf("-").resultsPointer, parseResultsPointer);
  if (!pointer || pointer.complete === false) return undefined;
  const marker = await readRecord(layoutOf(pointer.jobId).marker, parseCompletionMarker);
  if (!marker || marker.outcome !== "succeeded" || marker.subject !== subject || marker.jobId !== pointer.jobId) return undefined;
  if (pointer.launchId && marker.launchId !== pointer.launchId) return undefined;
  return pointer.jobId;
}

/** Set for a batch's workers unless --rerun: a subject that succeeded meanwhile (another driver) is not run again. */

/**
 * A batch worker holding the subject's lease looks once more: another driver may have run the subject to success
 * between the batch's look and the lease (it released the lease when done). Then the worker runs nothing.
 */
export async function alreadySucceeded(resolved: ResolvedJob): Promise<JobResult | undefined> {
  const { spec } = resolved;
  const earlier = await findSuccess(spec.outputs.prefix, spec.subject, spec.outputs.layout);
  if (!earlier) return undefined;
  const layout = jobLayout({ ...spec, jobId: earlier });
  return {
    jobId: earlier,
    subject: spec.subject,
    platform: resolved.platform,
    outcome: "skipped",
    exitCode: ExitCode.ok,
    message: `already succeeded as ${earlier} (run meanwhile by another driver)`,
    resultsUrl: formatS3Url(layout.results),
    markerUrl: formatS3Url(layout.marker),
    logUrl: formatS3Url(layout.log),
    timings: { driver: {}, agent: {} },
    attempts: [],
  };
}

/** The CLI entry a worker runs: bin/cloudcompute.js registers tsx and loads driver/cli.ts. */
export const CLI_ENTRY = path.join(PACKAGE_ROOT, "bin", "cloudcompute.js");

interface Worker {
  subject: string;
  kill(signal: NodeJS.Signals): void;
  done: Promise<BatchEntry>;
}

export { WORKER_ARGS_ENV };

function startWorker(subject: string, options: BatchOptions, logDir: string, batchId: string): Worker {
  const stream = options.stream ?? process.stderr;
  const logPath = path.join(logDir, `${subject}.log`);
  const log = fs.createWriteStream(logPath);
  const started = Date.now();
  // The job's flags go through the environment, never argv: they may hold env values and presigned URLs, and a
  // worker's command line is readable by every user of the machine for as long as its job runs.
  const child = spawn(process.execPath, [CLI_ENTRY, "run", "--subject", subject, "--json"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CLOUDCOMPUTE_WORKER: "1", [BATCH_ID_ENV]: batchId, [SKIP_SUCCEEDED_ENV]: options.rerun ? "0" : "1", [WORKER_ARGS_ENV]: JSON.stringify([...options.workerArgs, ...(options.subjectArgs?.(subject) ?? [])]) },
    // Its own process group: a terminal's Ctrl-C reaches only the batch, which forwards exactly one SIGINT (a
    // second one would make a worker leave without cleaning up).
    detached: true,
  });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  let partial = "";
  let lastError: string | undefined;
  child.stderr.on("data", (chunk: Buffer) => {
    log.write(chunk);
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.startsWith("error: ")) lastError = line.slice("error: ".length);
      if (line.trim()) stream.write(`${line}\n`);
    }
  });
  const done = new Promise<BatchEntry>((resolve) => {
    child.on("close", (code, signal) => {
      log.end();
      const exitCode = code ?? (signal === "SIGINT" ? ExitCode.interrupted : ExitCode.infra);
      const elapsed = seconds(Date.now() - started);
      const result = parseResult(stdout);
      if (result?.outcome === "skipped") {
        stream.write(`[batch] ${subject}: skipped, ${result.message}\n`);
        resolve({ subject, outcome: "skipped", exitCode, succeededBefore: result.jobId, message: result.message, seconds: elapsed, logPath });
      } else if (result) {
        resolve({ subject, outcome: result.outcome, exitCode, jobId: result.jobId, reason: result.reason, message: result.message, costUsd: result.costUsd, seconds: elapsed, logPath });
      } else if (isLeaseRefusal(lastError)) {
        // Another driver took the subject between our look and the worker's take: its refusal names the holder.
        resolve({ subject, outcome: "held", exitCode, reason: "held-by-another-driver", message: lastError, seconds: elapsed, logPath });
      } else {
        resolve({ subject, outcome: exitCode === ExitCode.interrupted ? "interrupted" : "error", exitCode, message: `worker exited with ${code ?? signal} without a result; see ${logPath}`, seconds: elapsed, logPath });
      }
    });
  });
  return { subject, kill: (signal) => child.exitCode === null && child.kill(signal), done };
}

function parseResult(stdout: string): JobResult | undefined {
  const line = stdout.trim().split("\n").pop();
  if (!line) return undefined;
  try {
    return JSON.parse(line) as JobResult;
  } catch {
    return undefined;
  }
}

export async function runBatch(options: BatchOptions): Promise<BatchResult> {
  const stream = options.stream ?? process.stderr;
  const batchId = `batch-${new Date().toISOString().replace(/[-:.]/g, "")}`;
  const logDir = path.join(cloudcomputeHome(), "batches", batchId);
  fs.mkdirSync(logDir, { recursive: true });
  const entries = new Map<string, BatchEntry>();

  const pending: string[] = [];
  for (const subject of options.subjects) {
    const previous = options.rerun ? undefined : await findSuccess(options.outputPrefix, subject, options.outputLayout);
    const held = previous ? undefined : await liveLeaseOf(options.outputPrefix, subject, options.outputLayout);
    if (previous) {
      entries.set(subject, { subject, outcome: "skipped", exitCode: 0, succeededBefore: previous, message: `already succeeded as ${previous}` });
      stream.write(`[batch] ${subject}: skipped, already succeeded as ${previous} (--rerun runs it again)\n`);
    } else if (held) {
      const message = held.message;
      entries.set(subject, { subject, outcome: "held", exitCode: ExitCode.badInput, reason: "held-by-another-driver", message });
      stream.write(`[batch] ${subject}: not started: ${message}\n`);
    } else pending.push(subject);
  }
  stream.write(`[batch] ${batchId}: ${pending.length} job(s) to run, ${options.subjects.length - pending.length} skipped, concurrency ${options.concurrency}; logs in ${logDir}\n`);

  const running = new Set<Worker>();
  const onAbort = () => running.forEach((worker) => worker.kill("SIGINT"));
  options.signal.addEventListener("abort", onAbort);
  try {
    const queue = [...pending];
    const lanes = Array.from({ length: Math.max(1, Math.min(options.concurrency, queue.length)) }, async () => {
      for (let subject = queue.shift(); subject !== undefined && !options.signal.aborted; subject = queue.shift()) {
        const worker = startWorker(subject, options, logDir, batchId);
        running.add(worker);
        const entry = await worker.done;
        running.delete(worker);
        entries.set(subject, entry);
      }
    });
    await Promise.all(lanes);
  } finally {
    options.signal.removeEventListener("abort", onAbort);
  }
  for (const subject of pending) {
    if (!entries.has(subject)) entries.set(subject, { subject, outcome: "interrupted", exitCode: ExitCode.interrupted, message: "not started: the batch was interrupted" });
  }

  const ordered = options.subjects.map((subject) => entries.get(subject)!);
  const summaryPath = path.join(logDir, "summary.json");
  const result: BatchResult = { batchId, entries: ordered, exitCode: batchExitCode(ordered, options.signal.aborted), summaryPath };
  fs.writeFileSync(summaryPath, JSON.stringify(result, null, 2) + "\n");
  return result;
}

/** 130 if interrupted, else 3 if any infrastructure error, else 1 if any job failed, else 0. */
export function batchExitCode(entries: BatchEntry[], interrupted: boolean): number {
  if (interrupted || entries.some((e) => e.exitCode === ExitCode.interrupted)) return ExitCode.interrupted;
  if (entries.some((e) => e.exitCode === ExitCode.infra || e.exitCode === ExitCode.badInput)) return ExitCode.infra;
  if (entries.some((e) => e.exitCode !== 0)) return ExitCode.jobFailed;
  return ExitCode.ok;
}

export function batchTable(result: BatchResult): string {
  const counts = new Map<string, number>();
  for (const e of result.entries) counts.set(e.outcome, (counts.get(e.outcome) ?? 0) + 1);
  return (
    table(
      ["SUBJECT", "OUTCOME", "JOB", "REASON", "SECONDS", "COST"],
      result.entries.map((e) => [e.subject, e.outcome, e.jobId ?? e.succeededBefore ?? "", e.reason ?? "", e.seconds === undefined ? "" : String(e.seconds), e.costUsd === undefined ? "" : formatCost(e.costUsd)]),
    ) + `${[...counts].map(([k, v]) => `${v} ${k}`).join(", ")}; summary ${result.summaryPath}\n`
  );
}
