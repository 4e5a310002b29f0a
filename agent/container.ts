/**
 * Containers: pull an image and run a job in it with docker, podman or apptainer, or as a plain host process (runtime
 * "none"). Inputs are bind-mounted read-only, the output directory read-write; stdout/stderr go to the log. The command
 * lines come from runtime-commands.ts, the spawning and killing from process.ts.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ContainerRuntime } from "../job/spec";
import { errorMessage } from "../common/errors";
import { JobFailure } from "./errors";
import { killTree, runProcess, runSupervised, type ProcessResult } from "./process";
import { containerInvocation, containerStopInvocations, envFileText, pullInvocation, type ContainerCommand } from "./runtime-commands";

export interface PullImageOptions {
  runtime: ContainerRuntime;
  image: string;
  /** Where apptainer keeps the SIF file. */
  workdir?: string;
  signal?: AbortSignal;
  /** Pull progress goes here (the job log). */
  output?: Writable;
}

export interface PulledImage {
  runtime: ContainerRuntime;
  reference: string;
  /** Registry digest (`sha256:...`); for apptainer the SIF file's hash (`sif-sha256:...`). */
  digest?: string;
  /** What to hand to `run`: the reference, or the SIF path for apptainer. */
  runRef: string;
}

/** Pull `image`; fails with JobFailure "image-pull-failed" (the process's last output in the message). */
export async function pullImage(opts: PullImageOptions): Promise<PulledImage> {
  const { runtime, image } = opts;
  if (runtime === "none") return { runtime, reference: image, runRef: image };
  const { program, args, runRef } = pullInvocation(runtime, image, opts.workdir ?? process.cwd());
  let result: ProcessResult;
  try {
    result = await runProcess(program, args, { output: opts.output, signal: opts.signal });
  } catch (err) {
    throw new JobFailure("image-pull-failed", `cannot run ${program} to pull ${image}: ${errorMessage(err)}`, "pull");
  }
  if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("pull aborted");
  if (result.exitCode !== 0) {
    const last = result.tail.trim().split("\n").slice(-3).join(" | ");
    throw new JobFailure("image-pull-failed", `${program} pull ${image} failed (exit ${result.exitCode ?? result.signal}): ${last}`, "pull");
  }
  const digest = runtime === "apptainer" ? `sif-sha256:${await fileSha256(runRef)}` : await imageDigest(runtime, image);
  return { runtime, reference: image, digest, runRef };
}

async function fileSha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(file), hash);
  return hash.digest("hex");
}

function repositoryOf(reference: string): string {
  const withoutDigest = reference.split("@")[0];
  const lastSlash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.lastIndexOf(":");
  return colon > lastSlash ? withoutDigest.slice(0, colon) : withoutDigest;
}

/** The registry digest of a local image: the RepoDigest of its own repository, else podman's `.Digest`. */
export async function imageDigest(runtime: "docker" | "podman", image: string): Promise<string | undefined> {
  const inspect = await runProcess(runtime, ["image", "inspect", "--format", "{{json .RepoDigests}}", image]).catch(() => undefined);
  if (inspect?.exitCode === 0) {
    try {
      const digests = (JSON.parse(inspect.tail.trim()) as string[] | null) ?? [];
      const repo = repositoryOf(image).replace(/^docker\.io\/(library\/)?/, "");
      const own = digests.find((d) => repositoryOf(d).replace(/^docker\.io\/(library\/)?/, "") === repo);
      const chosen = own ?? digests[0];
      if (chosen) return chosen.slice(chosen.indexOf("@") + 1);
    } catch {
      // fall through
    }
  }
  if (runtime === "podman") {
    const plain = await runProcess(runtime, ["image", "inspect", "--format", "{{.Digest}}", image]).catch(() => undefined);
    const value = plain?.exitCode === 0 ? plain.tail.trim() : "";
    if (/^sha256:[0-9a-f]{64}$/.test(value)) return value;
  }
  return undefined;
}

export interface RunContainerOptions extends ContainerCommand {
  /** stdout and stderr of the job. */
  output?: Writable;
  /** Kill the job at this time (epoch ms) and report `timedOut`. */
  deadline?: number;
  signal?: AbortSignal;
  /** Grace between SIGTERM and SIGKILL (default 10 s). */
  killGraceMs?: number;
}

export interface RunResult extends ProcessResult {
  timedOut: boolean;
  seconds: number;
  /** The exact program and arguments run (values of env vars are not in it). */
  argv: string[];
}

/**
 * Run the job and wait for it. Never throws for a failing command: the exit code, signal and `timedOut` say what
 * happened. Throws JobFailure "container-failed" only when the runtime program cannot be started.
 */
export async function runContainer(opts: RunContainerOptions): Promise<RunResult> {
  const name = opts.name ?? `cloudcompute-${randomBytes(6).toString("hex")}`;
  // Owner-only, and removed when the run ends (on EC2 the temporary directory is in memory).
  const envDir = opts.env && Object.keys(opts.env).length > 0 && (opts.runtime === "docker" || opts.runtime === "podman") ? await fsp.mkdtemp(path.join(os.tmpdir(), "cc-env-")) : undefined;
  const envFile = envDir && path.join(envDir, "container.env");
  if (envFile) await fsp.writeFile(envFile, envFileText(opts.env!), { mode: 0o600 });
  const { program, args, env } = containerInvocation({ ...opts, name, envFile });
  const started = Date.now();
  const isHostProcess = opts.runtime === "none" || opts.runtime === "apptainer";
  // Stop the container itself, not just the CLI client; --rm then removes it.
  const container = containerStopInvocations(opts.runtime, name);
  const quietly = (invocation: { program: string; args: string[] }) => void runProcess(invocation.program, invocation.args).catch(() => undefined);
  try {
    const result = await runSupervised(
      program,
      args,
      { env, cwd: opts.runtime === "none" ? opts.workdir : undefined, output: opts.output, detached: isHostProcess },
      {
        deadline: opts.deadline,
        signal: opts.signal,
        killGraceMs: opts.killGraceMs ?? 10_000,
        stop: (pid) => (container ? quietly(container.stop) : killTree(pid, true, "SIGTERM")),
        forceStop: (pid) => {
          if (container) quietly(container.remove);
          killTree(pid, isHostProcess, "SIGKILL");
        },
      },
    );
    return { ...result, seconds: (Date.now() - started) / 1000, argv: [program, ...args] };
  } catch (err) {
    throw new JobFailure("container-failed", `cannot start ${program}: ${errorMessage(err)}`, "run");
  } finally {
    if (envDir) await fsp.rm(envDir, { recursive: true, force: true });
  }
}
