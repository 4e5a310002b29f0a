/**
 * What ended a job, as plain data: the failure a wait's end or an error means, and whether another attempt could fix
 * it. Light on purpose: a batch's process judges its jobs with it without loading the engine or the Pulumi SDK.
 */
import type { CompletionMarker } from "../job/records";
import { roundUsd, spotAccount, type AttemptCost } from "../job/pricing";
import { errorMessage } from "../common/errors";
import { ExitCode, InterruptedError } from "./errors";
import { classifyAwsFailure } from "./backoff";
import type { HeldLease } from "./lease";
import type { JobRecord } from "./jobindex";
import type { WaitResult } from "./wait";
import type { JobResult, Outcome } from "./run";

export interface Failure {
  outcome: Outcome;
  exitCode: ExitCode;
  reason: string;
  message: string;
}

export interface Ending {
  wait?: WaitResult;
  failure?: Failure;
  /** The launch ended before its stack existed: nothing to tear down. */
  nothingCreated?: boolean;
}

/**
 * What an error that ended a launch or a wait means for the job: the lease lost to another driver, the user's
 * interrupt, or (with a stack) an engine failure — capacity that never came, or `up` failing. Without a stack any other
 * error is rethrown by the caller: nothing was created.
 */
export function failureOfError(
  err: unknown,
  jobId: string,
  at: { stackExists: boolean; computeStarted: boolean; lease?: HeldLease; userSignal: AbortSignal; explain?: (err: unknown, jobId: string) => Error },
): Failure {
  const created = at.stackExists ? "; the job's resources were destroyed" : "; nothing was created";
  if (at.lease?.lost.aborted || at.lease?.handle.lost) {
    const why = at.lease.handle.lost?.message ?? "the subject's lease was lost";
    return { outcome: "error", exitCode: ExitCode.infra, reason: "lease-lost", message: `${why}${created}` };
  }
  if (at.userSignal.aborted || err instanceof InterruptedError) {
    return { outcome: "interrupted", exitCode: ExitCode.interrupted, reason: "interrupted", message: "interrupted: the job's resources were destroyed" };
  }
  const explained = at.explain ? at.explain(err, jobId) : new Error(errorMessage(err));
  // Capacity that did not come back within the backoff: a fresh launch (--retries; spot's last is on-demand) may find it.
  const reason = at.computeStarted ? "driver-error" : classifyAwsFailure(err) === "capacity" ? "insufficient-capacity" : "up-failed";
  const waited = reason === "insufficient-capacity" ? "EC2 had no capacity for the instance type within the backoff (see the log above); --retries launches again, spot's last retry on-demand.\n" : "";
  return { outcome: "error", exitCode: ExitCode.infra, reason, message: `${waited}${explained.message}` };
}

/** The failure a wait's end means, if any: a failed marker, lost compute, a silent agent, max runtime. */
export function failureOfWait(wait: WaitResult): Failure | undefined {
  switch (wait.kind) {
    case "marker":
      return markerFailure(wait.marker);
    case "lost":
      return { outcome: "failed", exitCode: ExitCode.jobFailed, reason: wait.reason, message: `the compute ended without a completion marker: ${wait.detail}` };
    case "heartbeat-lost":
      return { outcome: "failed", exitCode: ExitCode.jobFailed, reason: "heartbeat-lost", message: wait.detail };
    case "max-runtime":
      return { outcome: "failed", exitCode: ExitCode.jobFailed, reason: "max-runtime", message: wait.detail };
  }
}

function markerFailure(marker: CompletionMarker): Failure | undefined {
  if (marker.outcome === "succeeded") return undefined;
  return {
    outcome: "failed",
    exitCode: ExitCode.jobFailed,
    reason: marker.reason ?? "failed",
    message: `failed in phase ${marker.phase ?? "?"}${marker.reason ? ` (${marker.reason})` : ""}: ${marker.message}`,
  };
}

/**
 * Worth another attempt: a spot interruption (the agent's marker or EC2's state reason says so), an instance EC2
 * itself lost (a `Server.*` state reason), or capacity that `up`'s backoff waited for in vain. A failure the job would meet again — a bad input, a failing container, an
 * agent that died for no reason anyone names — is not retried: that only pays for the same failure twice.
 */
export function isRetryable(result: Pick<JobResult, "reason" | "message">): boolean {
  if (result.reason === "spot-interrupted" || result.reason === "insufficient-capacity") return true;
  return result.reason === "instance-lost" && /\(Server\.[A-Za-z]+/.test(result.message);
}


/** A result's spot account, as a field when there is one to give (spread into the result). */
export function withSpotAccount(attemptCosts: readonly AttemptCost[]): Pick<JobResult, "spot"> {
  const account = spotAccount(attemptCosts);
  return account ? { spot: account } : {};
}

/**
 * What a job's attempts cost together, as result fields: their sum (every attempt is billed), marked incomplete when
 * some attempt's cost is unknown — a lower bound then, never a silent zero — and the spot account.
 */
export function costOfAttempts(attemptCosts: readonly AttemptCost[]): Pick<JobResult, "costUsd" | "costIncomplete" | "spot"> {
  const known = attemptCosts.filter((a) => a.costUsd !== undefined);
  const costUsd = known.length > 0 ? roundUsd(known.reduce((sum, a) => sum + a.costUsd!, 0)) : undefined;
  return { costUsd, ...(known.length < attemptCosts.length ? { costIncomplete: true } : {}), ...withSpotAccount(attemptCosts) };
}

/** An attempt's cost as its job record keeps it (records from before attemptCost: the cost alone, not spot). */
export function attemptCostOfRecord(record: Pick<JobRecord, "jobId" | "costUsd" | "reason" | "attemptCost">): AttemptCost {
  return record.attemptCost ?? { jobId: record.jobId, spot: false, costUsd: record.costUsd, ...(record.reason ? { reason: record.reason } : {}) };
}

/**
 * The result of a job's latest attempt with every earlier attempt's cost folded in: a retried job is billed for all
 * of them, so its cost is their sum, and its spot account says what spot saved and what the lost attempts cost.
 */
export function withEarlierAttempts(earlier: readonly AttemptCost[], result: JobResult): JobResult {
  if (earlier.length === 0) return result;
  const attemptCosts = [...earlier, ...(result.attemptCosts ?? [{ jobId: result.jobId, spot: false, costUsd: result.costUsd }])];
  const { spot: _last, costIncomplete: _lastIncomplete, ...rest } = result;
  return { ...rest, attemptCosts, ...costOfAttempts(attemptCosts) };
}
