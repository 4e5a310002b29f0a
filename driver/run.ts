/**
 * One job, start to end: launch (validate, create the job's stack, up: driver/job-phases.ts) → wait for the marker
 * (driver/wait.ts) → finish (refresh, destroy — the stack and its history stay: the audit trail — confirm nothing is
 * left, summary). Whatever happens after the stack exists — a failed `up`, a lost instance, Ctrl-C — ends in the same
 * teardown. Retries after lost compute keep the subject's lease across attempts.
 */
import { randomUUID } from "node:crypto";
import type { AttemptCost, Price, SpotAccount } from "../job/pricing";
import { makeJobId } from "../job/layout";
import { scrubSignatures, type JobSpec } from "../job/spec";
import { errorMessage } from "../common/errors";
import { seconds } from "../common/time";
import { ExitCode } from "./errors";
import { platformNamed } from "./platform";
import { explainEngineError } from "./engine";
import { stagedSpec } from "./preflight";
import { createProgress, Progress } from "./progress";
import type { ResolvedJob } from "./options";
import { waitForCompletion } from "./wait";
import { checkPresignedExpiry } from "../job/presigned";
import { holdSubjectLease, type HeldLease } from "./lease";
import { activeJobs, finishJob, launchJob, type Ending } from "./job-phases";
import { failureOfError, isRetryable, withEarlierAttempts } from "./job-outcomes";
export { isRetryable };

/** skipped: a batch worker found the subject succeeded meanwhile (driver/batch.ts alreadySucceeded). */
export type Outcome = "succeeded" | "failed" | "interrupted" | "error" | "dry-run" | "skipped";

export interface JobResult {
  jobId: string;
  subject: string;
  platform: string;
  /** The instance type the job ran on (a comparison's or auto's choice included). */
  instanceType?: string;
  outcome: Outcome;
  exitCode: ExitCode;
  /** Why it failed: the marker's reason, or the driver's (instance-lost, spot-interrupted, heartbeat-lost, max-runtime, up-failed, insufficient-capacity, interrupted). */
  reason?: string;
  message: string;
  resultsUrl: string;
  markerUrl: string;
  logUrl: string;
  /** The agent's provenance record: redacted spec, image digest, each input's and output's sha256. */
  provenanceUrl?: string;
  /** Seconds per step: the driver's (create, up, wait, destroy, total) and the agent's phases. */
  timings: { driver: Record<string, number>; agent: Partial<Record<string, number>> };
  outputs?: { count: number; bytes: number; partial: boolean };
  /** From compute start (up finished) to compute gone (destroy finished); AWS bills at least 60 s. */
  instanceSeconds?: number;
  billedSeconds?: number;
  costUsd?: number;
  /** The instance's price costUsd used (it adds the root volume), with its source and date (driver/pricing.ts). */
  price?: Price;
  /** Every attempt's billed seconds and cost, first to last; costUsd above is their sum (each attempt is billed). */
  attemptCosts?: AttemptCost[];
  /** Some attempt's cost is unknown (no price, or no instance time): costUsd is what is known, a lower bound. */
  costIncomplete?: boolean;
  /** For spot or retried jobs: what spot saved against on-demand, and what the lost attempts cost. */
  spot?: SpotAccount;
  /** Every attempt's job id, first to last (retries after lost instances add more). */
  attempts: string[];
}

export interface RunOptions {
  /** Retries after the compute ended without a marker (spot interruption, lost instance). */
  retries?: number;
  /** USD/hour for the estimate, instead of the platform's price. */
  pricePerHour?: number;
  /** Where progress and engine output go. */
  stream?: NodeJS.WriteStream;
  /** Show the engine's own output (pulumi up/destroy) as it comes. */
  verbose?: boolean;
  /** Aborting it interrupts the job: cancel the update if one runs, destroy, result "interrupted". */
  signal: AbortSignal;
  /**
   * The job's inputs resolved afresh (presigned URLs asked for or signed again): a retry starts hours after the first
   * launch, with URLs that were checked for that launch only.
   */
  freshInputs?: () => Promise<JobSpec["inputs"]>;
  /** Retry attempt bookkeeping (used by the retry loop). */
  attempt?: number;
  retryOf?: string;
  /** The subject's run lease, held by runJobWithRetries across attempts; its loss ends the job (lease-lost). */
  lease?: HeldLease;
}

export { activeJobs };

/** Run a job, retrying lost compute (or capacity) up to `retries` times; spot falls back to on-demand on the last attempt. */
export async function runJobWithRetries(resolved: ResolvedJob, options: RunOptions): Promise<JobResult> {
  const stream = options.stream ?? process.stderr;
  // One subject, one running job: refused here, before anything exists, if another driver holds the subject.
  const lease = options.lease ?? (await holdSubjectLease(resolved.spec, resolved.leaseSeconds ?? 300, (line) => stream.write(`[${resolved.spec.jobId}] ${line}\n`)));
  try {
    return await attemptsOf(resolved, { ...options, lease });
  } finally {
    if (!options.lease) await lease.release();
  }
}

async function attemptsOf(resolved: ResolvedJob, options: RunOptions & { lease: HeldLease }): Promise<JobResult> {
  const retries = options.retries ?? 0;
  const attempts: string[] = [];
  let costs: AttemptCost[] = [];
  let spec = resolved.spec;
  for (let attempt = 1; ; attempt++) {
    const isLast = attempt > retries;
    const attemptSpec: JobSpec = {
      ...spec,
      jobId: attempt === 1 ? spec.jobId : makeJobId(spec.subject),
      instance: { ...spec.instance, spot: resolved.spec.instance.spot && !(isLast && attempt > 1) },
    };
    const result = withEarlierAttempts(costs, await runJob({ ...resolved, spec: attemptSpec }, { ...options, attempt, retryOf: attempts[0] }));
    costs = result.attemptCosts ?? [];
    attempts.push(result.jobId);
    result.attempts = [...attempts];
    if (!isRetryable(result) || isLast || options.signal.aborted || options.lease.lost.aborted) return result;
    const stream = options.stream ?? process.stderr;
    const next = await inputsForRetry(attemptSpec, options.freshInputs, new Date());
    if ("blocked" in next) {
      stream.write(`[${result.jobId}] ${result.reason}: not retried: ${next.blocked}\n`);
      return result;
    }
    stream.write(`[${result.jobId}] ${result.reason}: retrying (${attempt}/${retries})${next.refreshed ? " with fresh presigned URLs" : ""}\n`);
    spec = next.spec;
  }
}

/**
 * The spec a retry launches with: its presigned inputs asked for again when the run can (`fresh`), then checked like
 * any presigned URL; or why it is not launched (the URLs cannot be renewed and would die before it could end).
 */
export async function inputsForRetry(
  spec: JobSpec,
  fresh: RunOptions["freshInputs"],
  now: Date,
): Promise<{ spec: JobSpec; refreshed: boolean } | { blocked: string }> {
  let next = spec;
  const refreshed = fresh !== undefined && spec.inputs.some((input) => input.access === "presigned");
  if (refreshed) {
    try {
      next = { ...spec, inputs: await fresh() };
    } catch (err) {
      return { blocked: `fresh presigned URLs could not be had: ${scrubSignatures(errorMessage(err))}` };
    }
  }
  const expiring = expiryBlocksRetry(next, now);
  return expiring ? { blocked: expiring } : { spec: next, refreshed };
}

/**
 * Why a retry would fail for its presigned URLs, or undefined: they were checked against the first launch, and a
 * retry starts hours later (an interrupted attempt may have run up to max runtime) with the same URLs.
 */
export function expiryBlocksRetry(spec: Pick<JobSpec, "inputs" | "limits">, now: Date): string | undefined {
  const { problems } = checkPresignedExpiry(spec.inputs, spec.limits, now);
  return problems.length > 0 ? problems.join("; ") : undefined;
}

export async function runJob(resolved: ResolvedJob, options: RunOptions): Promise<JobResult> {
  const stream = options.stream ?? process.stderr;
  // A fresh nonce per launch: the wait takes only a marker of this launch, never one an earlier launch left.
  const spec: JobSpec = { ...stagedSpec(resolved), launchId: randomUUID() };
  const progress = createProgress(`[${spec.jobId}]`, stream);
  const phase = { stream, verbose: options.verbose, pricePerHour: options.pricePerHour, progress };
  const launch = await launchJob(resolved, spec, { ...phase, signal: options.signal, lease: options.lease, attempt: options.attempt, retryOf: options.retryOf });
  if (launch.kind === "ended") return launch.result;
  const { context, stack } = launch;
  // Interrupted by the user, or by the loss of the subject's lease (another driver now runs the subject).
  const lost = options.lease?.lost;
  const signal = lost ? AbortSignal.any([options.signal, lost]) : options.signal;
  const platform = platformNamed(resolved.platform);
  const ending: Ending = {};
  const tWait = Date.now();
  try {
    ending.wait = await waitForCompletion({ spec, platform, instanceId: context.instanceId!, startedAt: context.computeStartedAt!, signal, progress });
    context.driverTimings.wait = seconds(Date.now() - tWait);
  } catch (err) {
    ending.failure = failureOfError(err, spec.jobId, { stackExists: true, computeStarted: true, lease: options.lease, userSignal: options.signal, explain: explainEngineError });
  }
  progress.end();
  return finishJob(context, ending, { ...phase, stack });
}

export { createProgress, Progress };
// driver/cli.ts takes the dry run from here, beside the run it previews.
export { dryRun } from "./dry-run";
