/**
 * Waiting for a running job to end: the completion marker, or evidence that none will come (the compute is gone,
 * the heartbeat stopped, max runtime passed). Progress comes from the agent's status object.
 */
import { jobLayout } from "../job/layout";
import type { AgentStatus, CompletionMarker } from "../job/records";
import type { JobSpec } from "../job/spec";
import { InterruptedError } from "./errors";
import type { Platform } from "./platform";
import type { Progress } from "./progress";
import { readJson } from "./s3";

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

export async function waitForCompletion(options: WaitOptions): Promise<WaitResult> {
  const { spec, platform, signal, progress } = options;
  const now = options.now ?? Date.now;
  const layout = jobLayout(spec);
  const limits = spec.limits;
  // The agent stops the container at max runtime and the instance's watchdog powers off after the grace; the
  // driver gives up a little later still, so it never races either of them.
  const deadline = options.startedAt + (limits.maxRuntimeMinutes + limits.graceMinutes) * 60_000 + 2 * 60_000;
  let lastStatus: AgentStatus | undefined;
  // Staleness is judged by when *we* saw the status change, so clock skew between machines does not matter.
  let lastChangeSeen = options.startedAt;
  let heartbeatBudgetMs = (platform.bootGraceSeconds + limits.heartbeatTimeoutSeconds) * 1000;

  for (;;) {
    if (signal.aborted) throw new InterruptedError();
    const marker = await readJson<CompletionMarker>(layout.marker);
    if (marker) return { kind: "marker", marker, lastStatus };

    const status = await readJson<AgentStatus>(layout.status);
    if (status && status.updatedAt !== lastStatus?.updatedAt) {
      lastStatus = status;
      lastChangeSeen = now();
      heartbeatBudgetMs = limits.heartbeatTimeoutSeconds * 1000;
      progress.status(status);
    }

    const compute = await platform.computeState(options.instanceId, spec);
    if (!compute.alive) {
      // The agent writes its marker and then exits: look once more before calling the job lost.
      const late = await readJson<CompletionMarker>(layout.marker);
      if (late) return { kind: "marker", marker: late, lastStatus };
      return { kind: "lost", reason: compute.reason ?? "instance-lost", detail: compute.detail ?? "the compute ended without a completion marker", lastStatus };
    }
    if (now() - lastChangeSeen > heartbeatBudgetMs) {
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
      return { kind: "max-runtime", detail: `still running after max runtime ${limits.maxRuntimeMinutes} min + grace ${limits.graceMinutes} min`, lastStatus };
    }
    await sleep(platform.pollIntervalMs, signal);
  }
}
