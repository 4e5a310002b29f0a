/**
 * Process supervision: spawn a program, copy its output to the log while keeping the tail for error messages, and
 * stop it on abort or at a deadline — asked first, forced after a grace period.
 */
import { spawn } from "node:child_process";
import type { Writable } from "node:stream";

export interface ProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The last few KiB of stdout+stderr, for error messages. */
  tail: string;
}

export interface ProcessOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Receives stdout and stderr (not ended by us). */
  output?: Writable;
  signal?: AbortSignal;
  /** Own process group, so a kill reaches the whole tree (host processes, apptainer). */
  detached?: boolean;
  onSpawn?: (pid: number | undefined) => void;
}

const TAIL_BYTES = 8192;

/** Run a program to completion; rejects only when it cannot be started. */
export function runProcess(program: string, args: string[], opts: ProcessOptions = {}): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ["ignore", "pipe", "pipe"],
      detached: opts.detached,
    });
    let tail = "";
    const collect = (chunk: Buffer) => {
      opts.output?.write(chunk);
      tail = (tail + chunk.toString("utf8")).slice(-TAIL_BYTES);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const onAbort = () => killTree(child.pid, opts.detached === true, "SIGTERM");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.once("spawn", () => opts.onSpawn?.(child.pid));
    child.once("error", (err) => {
      opts.signal?.removeEventListener("abort", onAbort);
      reject(err);
    });
    child.once("close", (exitCode, signal) => {
      opts.signal?.removeEventListener("abort", onAbort);
      resolve({ exitCode, signal, tail });
    });
  });
}

/** Signal a process, or its whole group; one already gone is no error. */
export function killTree(pid: number | undefined, group: boolean, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // already gone
  }
}

export interface Supervision {
  /** Stop the program at this time (epoch ms) and report `timedOut`. */
  deadline?: number;
  /** Aborting it stops the program. */
  signal?: AbortSignal;
  /** Grace between `stop` and `forceStop`. */
  killGraceMs: number;
  /** Ask the program to end (its pid, once spawned). */
  stop(pid: number | undefined): void;
  /** End it regardless, once the grace has passed. */
  forceStop(pid: number | undefined): void;
}

/**
 * `runProcess` under a deadline and an abort signal: either stops the program, then forces it after the grace. Never
 * fails for a failing program; rejects only when it cannot be started.
 */
export async function runSupervised(
  program: string,
  args: string[],
  opts: Omit<ProcessOptions, "signal" | "onSpawn">,
  supervision: Supervision,
): Promise<ProcessResult & { timedOut: boolean }> {
  let timedOut = false;
  let pid: number | undefined;
  const kill = () => {
    supervision.stop(pid);
    const force = setTimeout(() => supervision.forceStop(pid), supervision.killGraceMs);
    force.unref();
  };
  const timer =
    supervision.deadline !== undefined
      ? setTimeout(() => {
          timedOut = true;
          kill();
        }, Math.max(0, supervision.deadline - Date.now()))
      : undefined;
  const onAbort = () => kill();
  supervision.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const result = await runProcess(program, args, { ...opts, onSpawn: (p) => (pid = p) });
    return { ...result, timedOut };
  } finally {
    if (timer) clearTimeout(timer);
    supervision.signal?.removeEventListener("abort", onAbort);
  }
}
