/**
 * Waiting for a running job to end: the completion marker, or evidence that none will come (the compute is gone,
 * the heartbeat stopped, max runtime passed). Progress comes from the agent's status object.
 */
import { jobLayout } from "../job/layout";
import { belongsToLaunch, parseAgentStatus, parseCompletionMarker, type AgentStatus, type CompletionMarker } from "../job/records";
import { formatS3Url } from "../job/s3url";
import type { JobSpec } from "../job/spec";
import { httpStatusOf } from "../common/retry";
import { errorMessage } from "../common/errors";
import { InterruptedError } from "./errors";
import type { ComputeState, Platform } from "./platform";
import type { Progress } from "./progress";
import { readRecord } from "./s3";

export type WaitResult =
  | { kind: "marker"; marker: CompletionMarker; lastStatus?: AgentStatus }
  | { kind: "lost"; reason: "spot-interrupted" | "instance-lost"; detail: string; lastStatus?: AgentStatus }
  | { kind: "heartbeat-lost"; detail: string; lastStatus?: AgentStatus }
  | { kind: "max-runtime"; detail: string; lastStatus?: AgentStatus };

export interface WaitOptions {
  spec: JobSpec;
  platform: Platform;
  instanceId: string;
  /** When the compute was started (ms since epoch): max runtime and boot grace count from here. */
  startedAt: number;
  signal: AbortSignal;
  progress: Progress;
  now?: () => number;
  /** A batch's shared pace (driver/poll-pacer.ts): each round of looks waits for its turn. */
  pace?: (signal: AbortSignal) => Promise<void>;
}

/** Resolve after `ms`, or reject with InterruptedError as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new InterruptedError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new InterruptedError());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Log a poll error at most once a minute (per kind), so an outage does not flood the terminal. */
function pollErrorReporter(progress: Progress, now: () => number): (what: string, err: unknown) => void {
  const lastShown = new Map<string, number>();
  return (what, err) => {
    const at = now();
    if (at - (lastShown.get(what) ?? -Infinity) < 60_000) return;
    lastShown.set(what, at);
    const denied = httpStatusOf(err) === 403 ? " (access denied: without s3:ListBucket a missing object answers 403)" : "";
    progress.note(`could not read ${what}, retrying: ${errorMessage(err)}${denied}`);
  };
}

export async function waitForCompletion(options: WaitOptions): Promise<WaitResult> {
  const { spec, platform, signal, progress } = options;
  const now = options.now ?? Date.now;
  const layout = jobLayout(spec);
  const limits = spec.limits;
  if (!spec.launchId) throw new Error(`job ${spec.jobId} has no launchId: the wait could not tell its marker from an earlier launch's`);
  const launch = { launchId: spec.launchId, instanceId: platform.name === "aws" ? options.instanceId : undefined };
  // The instance may boot for the boot allowance, then the agent stops the container at max runtime and the
  // watchdog powers off after the grace; the driver gives up a little later still, so it never races either.
  const deadline = options.startedAt + platform.bootGraceSeconds * 1000 + (limits.maxRuntimeMinutes + limits.graceMinutes) * 60_000 + 2 * 60_000;
  let lastStatus: AgentStatus | undefined;
  // Staleness is judged by when *we* saw the status change, so clock skew between machines does not matter.
  let lastChangeSeen = options.startedAt;
  let heartbeatBudgetMs = (platform.bootGraceSeconds + limits.heartbeatTimeoutSeconds) * 1000;
  const pollError = pollErrorReporter(progress, now);
  let foreignNoted = false;
  /** This launch's marker; records of another launch (a reused job id) are ignored. Undefined on a read error. */
  const readMarker = async (): Promise<CompletionMarker | null | undefined> => {
    try {
      const marker = await readRecord(layout.marker, parseCompletionMarker);
      if (marker && !belongsToLaunch(marker, launch)) {
        if (!foreignNoted) progress.note(`ignoring a marker of another launch (launchId ${marker.launchId ?? "none"}) at ${formatS3Url(layout.marker)}`);
        foreignNoted = true;
        return null;
      }
      return marker ?? null;
    } catch (err) {
      pollError("the completion marker", err);
      return undefined;
    }
  };

  for (;;) {
    if (signal.aborted) throw new InterruptedError();
    await options.pace?.(signal);
    // A poll error (throttling, DNS, an expired session) says nothing about the job: log it and look again later.
    // Only the heartbeat (judged on reads that worked), the deadline or the compute's own end finish the wait.
    let readsWorked = true;
    const marker = await readMarker();
    if (marker) return { kind: "marker", marker, lastStatus };
    if (marker === undefined) readsWorked = false;

    try {
      const status = await readRecord(layout.status, parseAgentStatus);
      if (status && belongsToLaunch(status, launch) && status.updatedAt !== lastStatus?.updatedAt) {
        lastStatus = status;
        lastChangeSeen = now();
        // The user-data's booting status does not end the boot allowance: packages and the agent may still take it.
        heartbeatBudgetMs = (status.booting ? platform.bootGraceSeconds : 0) * 1000 + limits.heartbeatTimeoutSeconds * 1000;
        progress.status(status);
      }
    } catch (err) {
      pollError("the agent's status", err);
      readsWorked = false;
    }

    let compute: ComputeState | undefined;
    try {
      compute = await platform.computeState(options.instanceId, spec);
    } catch (err) {
      pollError("the compute's state", err);
    }
    if (compute && !compute.alive) {
      // The agent writes its marker and then exits: look once more before calling the job lost.
      const late = await readMarker();
      if (late) return { kind: "marker", marker: late, lastStatus };
      if (late === null) {
        return { kind: "lost", reason: compute.reason ?? "instance-lost", detail: compute.detail ?? "the compute ended without a completion marker", lastStatus };
      }
    }
    if (readsWorked && now() - lastChangeSeen > heartbeatBudgetMs) {
      const seconds = Math.round((now() - lastChangeSeen) / 1000);
      return {
        kind: "heartbeat-lost",
        detail: lastStatus
          ? `no status update for ${seconds} s (limit ${limits.heartbeatTimeoutSeconds} s); last phase ${lastStatus.phase}`
          : `the agent posted no status within ${seconds} s of the compute starting`,
        lastStatus,
      };
    }
    if (now() > deadline) {
      return { kind: "max-runtime", detail: `still running after max runtime ${limits.maxRuntimeMinutes} min + grace ${limits.graceMinutes} min (+ boot allowance)`, lastStatus };
    }
    await sleep(platform.pollIntervalMs, signal);
  }
}
