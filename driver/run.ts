/**
 * One job, start to end: validate → create the job's stack (inline program = declareJob) → up → wait for the marker
 * → refresh → destroy (the stack and its history stay: the audit trail) → confirm nothing is left → summary.
 * Whatever happens after the stack exists — a failed `up`, a lost instance, Ctrl-C — ends in the same teardown.
 */
import { randomUUID } from "node:crypto";
import type { Stack } from "@pulumi/pulumi/automation";
import { jobLayout, makeJobId } from "../job/layout";
import type { CompletionMarker } from "../job/records";
import { formatS3Url } from "../job/s3url";
import { scrubSignatures, type JobSpec } from "../job/spec";
import { declareJob } from "../infra/index";
import { errorMessage } from "../common/errors";
import { seconds } from "../common/time";
import { BadInputError, ExitCode, InterruptedError } from "./errors";
import { explainEngineError, findPulumi, openJobStack } from "./engine";
import { JobRecord, readJobRecord, writeJobRecord } from "./jobindex";
import { workerBatchId } from "./worker-env";
import { currentOwner, ownerTags } from "./owner";
import { backendUrl } from "../common/paths";
import { platformNamed } from "./platform";
import { ensurePlugins, refuseSecretsWithoutPassphrase, stagedSpec } from "./preflight";
import { createProgress, Progress } from "./progress";
import type { ResolvedJob } from "./options";
import { teardown } from "./teardown";
import { classifyAwsFailure, withAwsBackoff } from "./backoff";
import { waitForCompletion, WaitResult } from "./wait";
import { checkPresignedExpiry } from "../job/presigned";
import { holdSubjectLease, type HeldLease } from "./lease";
import { alreadySucceeded } from "./batch";

/** skipped: a batch worker found the subject succeeded meanwhile (driver/batch.ts alreadySucceeded). */
export type Outcome = "succeeded" | "failed" | "interrupted" | "error" | "dry-run" | "skipped";

export interface JobResult {
  jobId: string;
  subject: string;
  platform: string;
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
  /** A batch worker without --rerun: once the lease is ours, a subject that succeeded meanwhile is not run again. */
  skipIfSucceeded?: boolean;
  /** The subject's run lease, held by runJobWithRetries across attempts; its loss ends the job (lease-lost). */
  lease?: HeldLease;
}

/** Jobs of this process whose stack may hold resources: a second Ctrl-C names them in the cleanup hint. */
export const activeJobs = new Set<string>();

/** Run a job, retrying lost compute (or capacity) up to `retries` times; spot falls back to on-demand on the last attempt. */
export async function runJobWithRetries(resolved: ResolvedJob, options: RunOptions): Promise<JobResult> {
  const stream = options.stream ?? process.stderr;
  // One subject, one running job: refused here, before anything exists, if another driver holds the subject.
  const lease = options.lease ?? (await holdSubjectLease(resolved.spec, resolved.leaseSeconds ?? 300, (line) => stream.write(`[${resolved.spec.jobId}] ${line}\n`)));
  try {
    const done = options.skipIfSucceeded ? await alreadySucceeded(resolved) : undefined;
    return done ?? (await attemptsOf(resolved, { ...options, lease }));
  } finally {
    if (!options.lease) await lease.release();
  }
}

async function attemptsOf(resolved: ResolvedJob, options: RunOptions & { lease: HeldLease }): Promise<JobResult> {
  const retries = options.retries ?? 0;
  const attempts: string[] = [];
  let spec = resolved.spec;
  for (let attempt = 1; ; attempt++) {
    const isLast = attempt > retries;
    const attemptSpec: JobSpec = {
      ...spec,
      jobId: attempt === 1 ? spec.jobId : makeJobId(spec.subject),
      instance: { ...spec.instance, spot: resolved.spec.instance.spot && !(isLast && attempt > 1) },
    };
    const result = await runJob({ ...resolved, spec: attemptSpec }, { ...options, attempt, retryOf: attempts[0] });
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

/**
 * Worth another attempt: a spot interruption (the agent's marker or EC2's state reason says so), an instance EC2
 * itself lost (a `Server.*` state reason), or capacity that `up`'s backoff waited for in vain. A failure the job would meet again — a bad input, a failing container, an
 * agent that died for no reason anyone names — is not retried: that only pays for the same failure twice.
 */
export function isRetryable(result: Pick<JobResult, "reason" | "message">): boolean {
  if (result.reason === "spot-interrupted" || result.reason === "insufficient-capacity") return true;
  return result.reason === "instance-lost" && /\(Server\.[A-Za-z]+/.test(result.message);
}

export async function runJob(resolved: ResolvedJob, options: RunOptions): Promise<JobResult> {
  const platform = platformNamed(resolved.platform);
  const stream = options.stream ?? process.stderr;
  // A fresh nonce per launch: the wait takes only a marker of this launch, never one an earlier launch left.
  const spec: JobSpec = { ...stagedSpec(resolved), launchId: randomUUID() };
  const layout = jobLayout(spec);
  // Interrupted by the user, or by the loss of the subject's lease (another driver now runs the subject).
  const lost = options.lease?.lost;
  const signal = lost ? AbortSignal.any([options.signal, lost]) : options.signal;
  const progress = createProgress(`[${spec.jobId}]`, stream);
  const t0 = Date.now();
  const driverTimings: Record<string, number> = {};
  const base = {
    jobId: spec.jobId,
    subject: spec.subject,
    platform: platform.name,
    resultsUrl: formatS3Url(layout.results),
    markerUrl: formatS3Url(layout.marker),
    logUrl: formatS3Url(layout.log),
    provenanceUrl: formatS3Url(layout.provenance),
    attempts: [spec.jobId],
  };

  await platform.preflight(spec, resolved.agentBundlePath);
  refuseSecretsWithoutPassphrase(spec, backendUrl(resolved.backend));
  await findPulumi(); // before anything is created: a missing CLI is reported with how to get it
  await ensurePlugins(platform);
  const earlier = readJobRecord(spec.jobId);
  if (earlier) {
    throw new BadInputError(
      `job id "${spec.jobId}" was used before on this machine (${earlier.state} since ${earlier.createdAt}): a job id is launched once. ` +
        `Leave out --job-id for a fresh one.`,
    );
  }

  const owner = currentOwner();
  const record: JobRecord = {
    jobId: spec.jobId,
    subject: spec.subject,
    platform: platform.name,
    backend: backendUrl(resolved.backend),
    state: "creating",
    createdAt: new Date(t0).toISOString(),
    driverPid: owner.pid,
    driverHost: owner.host,
    driverPidStart: owner.pidStart,
    region: spec.instance.region,
    markerUrl: base.markerUrl,
    resultsUrl: base.resultsUrl,
    statusUrl: formatS3Url(layout.status),
    logUrl: base.logUrl,
    attempt: options.attempt ?? 1,
    retryOf: options.retryOf,
    launchId: spec.launchId,
    batchId: workerBatchId(),
  };
  const engineOutput = (text: string) => {
    if (options.verbose) stream.write(text);
  };

  let stack: Stack | undefined;
  let computeStartedAt: number | undefined;
  let wait: WaitResult | undefined;
  let failure: { outcome: Outcome; exitCode: ExitCode; reason: string; message: string } | undefined;
  try {
    if (signal.aborted) throw new InterruptedError();
    if (options.lease) {
      // Still ours, now naming this attempt's job and launch.
      options.lease.handle.setJob(spec.jobId, spec.launchId);
      // A network blip here is no failure while the lease lasts (the timer keeps renewing); a taken over lease is.
      await options.lease.handle.confirm();
    }
    progress.note(`creating stack (${platform.name})`);
    activeJobs.add(spec.jobId);
    // Created, never selected: the backend refuses a second stack of one job id, whichever machine made the first.
    stack = await openJobStack({
      jobId: spec.jobId,
      backend: resolved.backend,
      mustBeNew: true,
      program: async () => {
        const out = declareJob(spec, { platform: platform.name, agentBundlePath: resolved.agentBundlePath });
        return { ...out, subject: spec.subject };
      },
    });
    writeJobRecord(record);
    // The owner goes into the backend too: gc and cancel on any machine sharing it can tell whose job this is.
    for (const [tag, value] of Object.entries(ownerTags(owner))) await stack.setTag(tag, value);
    // The AWS provider reads its region from stack config; the local platform declares no AWS provider resource.
    if (platform.name === "aws") await stack.setConfig("aws:region", { value: spec.instance.region });
    driverTimings.create = seconds(Date.now() - t0);
    if (signal.aborted) throw new InterruptedError();

    const tUp = Date.now();
    // Throttling or no capacity is "later", not "failed": the same stack is brought up again after a backoff.
    const jobStack = stack;
    const up = await withAwsBackoff("up", () => jobStack.up({ onOutput: engineOutput, signal, message: `cloudcompute job ${spec.jobId}: start` }), {
      signal,
      log: (line) => progress.note(line),
    });
    computeStartedAt = Date.now();
    driverTimings.up = seconds(computeStartedAt - tUp);
    const instanceId = String(up.outputs.instanceId?.value ?? "");
    writeJobRecord({ ...record, state: "running", instanceId });
    progress.note(`running on ${instanceId}; results will go to ${base.resultsUrl}`);

    const tWait = Date.now();
    wait = await waitForCompletion({ spec, platform, instanceId, startedAt: computeStartedAt, signal, progress });
    driverTimings.wait = seconds(Date.now() - tWait);
    progress.end();
    failure = failureOf(wait);
  } catch (err) {
    progress.end();
    const leaseLost = lost?.aborted || options.lease?.handle.lost;
    if (leaseLost) {
      const why = options.lease?.handle.lost?.message ?? "the subject's lease was lost";
      failure = { outcome: "error", exitCode: ExitCode.infra, reason: "lease-lost", message: `${why}${stack ? "; the job's resources were destroyed" : "; nothing was created"}` };
      if (!stack) writeJobRecord({ ...record, state: "error", endedAt: new Date().toISOString(), reason: "lease-lost", message: failure.message });
    } else if (options.signal.aborted || err instanceof InterruptedError) {
      failure = { outcome: "interrupted", exitCode: ExitCode.interrupted, reason: "interrupted", message: "interrupted: the job's resources were destroyed" };
    } else if (stack) {
      const explained = explainEngineError(err, spec.jobId);
      // Capacity that did not come back within the backoff: a fresh launch (--retries; spot's last is on-demand) may find it.
      const reason = computeStartedAt ? "driver-error" : classifyAwsFailure(err) === "capacity" ? "insufficient-capacity" : "up-failed";
      const waited = reason === "insufficient-capacity" ? "EC2 had no capacity for the instance type within the backoff (see the log above); --retries launches again, spot's last retry on-demand.\n" : "";
      failure = { outcome: "error", exitCode: ExitCode.infra, reason, message: `${waited}${explained.message}` };
    } else {
      // No stack: nothing was created. A refused job id keeps the earlier job's record as it is.
      if (!(err instanceof BadInputError)) writeJobRecord({ ...record, state: "error", endedAt: new Date().toISOString(), message: errorMessage(err) });
      throw err;
    }
  }

  // Teardown: always, once the stack exists. A second Ctrl-C during it leaves at once (see cli.ts).
  if (stack) {
    writeJobRecord({ ...record, state: "destroying" });
    progress.note(signal.aborted ? (options.signal.aborted ? "interrupted: destroying the job's resources (Ctrl-C again to leave at once)" : "the subject's lease was lost: destroying the job's resources") : "destroying the job's resources");
    const tDestroy = Date.now();
    try {
      // After an interrupted update, refresh anyway: it drops pending creates the cut-off update left.
      const refresh = platform.refreshBeforeDestroy || signal.aborted || !computeStartedAt;
      const reclaimed = await teardown(stack, spec.jobId, describe(failure, wait), { onOutput: engineOutput, refresh, platform, region: spec.instance.region, log: (line) => progress.note(line) });
      for (const line of reclaimed) progress.note(`deleted what the cut-off update had not recorded: ${line}`);
    } catch (err) {
      const explained = explainEngineError(err, spec.jobId);
      failure = {
        outcome: "error",
        exitCode: ExitCode.infra,
        reason: "destroy-failed",
        message: `${explained.message}\nThe job's resources may still exist: clean up with  npm run job -- cancel ${spec.jobId}`,
      };
    }
    driverTimings.destroy = seconds(Date.now() - tDestroy);
    if (failure?.reason !== "destroy-failed") activeJobs.delete(spec.jobId);
  }
  const computeEndedAt = Date.now();
  driverTimings.total = seconds(computeEndedAt - t0);

  const marker = wait?.kind === "marker" ? wait.marker : undefined;
  const instanceSeconds = computeStartedAt ? seconds(computeEndedAt - computeStartedAt) : undefined;
  const billedSeconds = instanceSeconds === undefined ? undefined : platform.name === "aws" ? Math.max(60, Math.ceil(instanceSeconds)) : instanceSeconds;
  const price = options.pricePerHour ?? (await platform.pricePerHour(spec).catch(() => undefined));
  const costUsd = billedSeconds !== undefined && price !== undefined ? Math.round(((billedSeconds * price) / 3600) * 10000) / 10000 : undefined;

  const result: JobResult = {
    ...base,
    outcome: failure?.outcome ?? "succeeded",
    exitCode: failure?.exitCode ?? ExitCode.ok,
    reason: failure?.reason,
    message: failure?.message ?? marker?.message ?? "succeeded",
    timings: { driver: driverTimings, agent: marker?.timings ?? {} },
    outputs: marker ? { count: marker.outputs.count, bytes: marker.outputs.bytes, partial: marker.outputs.partial } : undefined,
    instanceSeconds,
    billedSeconds,
    costUsd,
  };
  writeJobRecord({
    ...(readJobRecord(spec.jobId) ?? record),
    state: result.outcome === "succeeded" ? "succeeded" : result.outcome === "interrupted" ? "interrupted" : result.outcome === "failed" ? "failed" : "error",
    endedAt: new Date(computeEndedAt).toISOString(),
    driverPid: undefined,
    driverHost: undefined,
    driverPidStart: undefined,
    reason: result.reason,
    message: result.message,
    exitCode: result.exitCode,
    instanceSeconds,
    costUsd,
    timings: { ...driverTimings, ...Object.fromEntries(Object.entries(result.timings.agent).map(([k, v]) => [`agent.${k}`, v ?? 0])) },
  });
  return result;
}

function failureOf(wait: WaitResult): { outcome: Outcome; exitCode: ExitCode; reason: string; message: string } | undefined {
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

function markerFailure(marker: CompletionMarker) {
  if (marker.outcome === "succeeded") return undefined;
  return {
    outcome: "failed" as const,
    exitCode: ExitCode.jobFailed,
    reason: marker.reason ?? "failed",
    message: `failed in phase ${marker.phase ?? "?"}${marker.reason ? ` (${marker.reason})` : ""}: ${marker.message}`,
  };
}

/** The history message of the destroy: the job's outcome, so `pulumi stack history` tells the story. */
function describe(failure: ReturnType<typeof failureOf> | { reason: string } | undefined, wait: WaitResult | undefined): string {
  if (!failure) return "cloudcompute job: succeeded";
  const detail = wait?.kind === "marker" ? wait.marker.message : "";
  return `cloudcompute job: ${failure.reason}${detail ? ` — ${detail}` : ""}`.slice(0, 500);
}

export { createProgress, Progress };
// driver/cli.ts takes the dry run from here, beside the run it previews.
export { dryRun } from "./dry-run";
