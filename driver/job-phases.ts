/**
 * A job's two engine phases, each whole: `launchJob` (checks, create the stack, up: the compute runs) and `finishJob`
 * (refresh, destroy, confirm nothing is left, the job's record and result). Between them the job is only waited on,
 * which needs no engine: a single `run` waits in its own process (driver/run.ts); a batch waits on all its jobs in
 * one event loop and runs the two phases in short-lived engine workers (driver/engine-workers.ts). What passes
 * between the phases, `JobContext`, is plain JSON and holds no secret (the spec is redacted).
 */
import type { Stack } from "@pulumi/pulumi/automation";
import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { redactSpec, type JobSpec } from "../job/spec";
import type { PlatformName } from "../job/platform";
import { declareJob } from "../infra/index";
import { errorMessage } from "../common/errors";
import { seconds } from "../common/time";
import { backendUrl } from "../common/paths";
import { BadInputError, ExitCode, InterruptedError } from "./errors";
import { engineLetGo, explainEngineError, findPulumi, openJobStack } from "./engine";
import { JobRecord, readJobRecord, writeJobRecord } from "./jobindex";
import { workerBatchId } from "./worker-env";
import { currentOwner, ownerTags, type Owner } from "./owner";
import { platformNamed } from "./platform";
import { attemptCostUsd, billedSeconds as billedSecondsOf, flatPrices, type AttemptCost } from "../job/pricing";
import { ensurePlugins, refuseSecretsWithoutPassphrase } from "./preflight";
import { createProgress, type Progress } from "./progress";
import type { ResolvedJob } from "./options";
import { teardown } from "./teardown";
import { withAwsBackoff } from "./backoff";
import { failureOfError, failureOfWait, withSpotAccount, type Ending, type Failure } from "./job-outcomes";
import type { WaitResult } from "./wait";
import type { HeldLease } from "./lease";
import type { JobResult } from "./run";

export type { Ending, Failure };

/** Jobs of this process whose stack may hold resources: a second Ctrl-C names them in the cleanup hint. */
export const activeJobs = new Set<string>();

/** A launched job, as the wait and the finish need it: plain JSON, no secret. */
export interface JobContext {
  /** The staged spec with its launch id, redacted (presigned URLs and env values): the finish needs no input. */
  spec: JobSpec;
  platform: PlatformName;
  backend?: string;
  agentBundlePath: string;
  record: JobRecord;
  /** ms since epoch: the job's start, and the compute's start (up finished; absent if it never did). */
  t0: number;
  computeStartedAt?: number;
  /** ms since epoch: when the platform says the compute's billing began (EC2's launch time), if it can say. */
  launchedAt?: number;
  instanceId?: string;
  driverTimings: Record<string, number>;
}

export type LaunchOutcome = { kind: "running"; context: JobContext; stack?: Stack } | { kind: "ended"; result: JobResult };

export interface PhaseOptions {
  stream?: NodeJS.WriteStream;
  verbose?: boolean;
  pricePerHour?: number;
  progress?: Progress;
}

export interface LaunchOptions extends PhaseOptions {
  /** Aborting it cancels the update and tears down what exists (result "interrupted", or "lease-lost" with the lease). */
  signal: AbortSignal;
  lease?: HeldLease;
  attempt?: number;
  retryOf?: string;
  /** The process that owns the job while it runs (a batch's, when an engine worker launches for it). */
  owner?: Owner;
}

function baseResult(spec: JobSpec, platform: PlatformName) {
  const layout = jobLayout(spec);
  return {
    jobId: spec.jobId,
    subject: spec.subject,
    platform,
    instanceType: spec.instance.type,
    resultsUrl: formatS3Url(layout.results),
    markerUrl: formatS3Url(layout.marker),
    logUrl: formatS3Url(layout.log),
    provenanceUrl: formatS3Url(layout.provenance),
    attempts: [spec.jobId],
  };
}

/** Checks, create the stack, up. `spec` is staged and carries its launch id. Throws (nothing created) on bad input. */
export async function launchJob(resolved: ResolvedJob, spec: JobSpec, options: LaunchOptions): Promise<LaunchOutcome> {
  const platform = platformNamed(resolved.platform);
  const stream = options.stream ?? process.stderr;
  const layout = jobLayout(spec);
  const lost = options.lease?.lost;
  const signal = lost ? AbortSignal.any([options.signal, lost]) : options.signal;
  const progress = options.progress ?? createProgress(`[${spec.jobId}]`, stream);
  const t0 = Date.now();
  const driverTimings: Record<string, number> = {};

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

  const owner = options.owner ?? currentOwner();
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
    instanceType: spec.instance.type,
    markerUrl: formatS3Url(layout.marker),
    resultsUrl: formatS3Url(layout.results),
    statusUrl: formatS3Url(layout.status),
    logUrl: formatS3Url(layout.log),
    attempt: options.attempt ?? 1,
    retryOf: options.retryOf,
    launchId: spec.launchId,
    batchId: workerBatchId(),
  };
  const context: JobContext = { spec: redactSpec(spec), platform: platform.name, backend: resolved.backend, agentBundlePath: resolved.agentBundlePath, record, t0, driverTimings };
  const phase = { ...options, progress };
  let stack: Stack | undefined;
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
    const engineOutput = (text: string) => options.verbose && stream.write(text);
    const up = await withAwsBackoff("up", () => jobStack.up({ onOutput: engineOutput, signal, message: `cloudcompute job ${spec.jobId}: start` }), {
      signal,
      log: (line) => progress.note(line),
    });
    context.computeStartedAt = Date.now();
    driverTimings.up = seconds(context.computeStartedAt - tUp);
    context.instanceId = String(up.outputs.instanceId?.value ?? "");
    context.launchedAt = billingStart(await platform.launchedAt(context.instanceId, spec).catch(() => undefined), tUp, context.computeStartedAt);
    const launchedAt = context.launchedAt === undefined ? {} : { launchedAt: new Date(context.launchedAt).toISOString() };
    context.record = { ...record, state: "running", instanceId: context.instanceId, runningAt: new Date(context.computeStartedAt).toISOString(), spot: spec.instance.spot, ...launchedAt };
    writeJobRecord(context.record);
    progress.note(`running on ${context.instanceId}; results will go to ${formatS3Url(layout.results)}`);
    return { kind: "running", context, stack };
  } catch (err) {
    progress.end();
    const failure = failureOfError(err, spec.jobId, { stackExists: Boolean(stack), computeStarted: false, lease: options.lease, userSignal: options.signal, explain: explainEngineError });
    if (stack) return { kind: "ended", result: await finishJob(context, { failure }, { ...phase, stack }) };
    if (failure.reason !== "lease-lost") {
      // No stack: nothing was created. A refused job id keeps the earlier job's record as it is.
      if (!(err instanceof BadInputError)) writeJobRecord({ ...record, state: "error", endedAt: new Date().toISOString(), message: errorMessage(err) });
      throw err;
    }
    return { kind: "ended", result: await finishJob(context, { failure, nothingCreated: true }, phase) };
  }
}


/**
 * Teardown (always, once the stack exists), then the job's result and final record. `stack` is the launch's own
 * when the same process finishes; an engine worker opens it by job id.
 */
export async function finishJob(context: JobContext, ending: Ending, options: PhaseOptions & { stack?: Stack }): Promise<JobResult> {
  const { spec } = context;
  const platform = platformNamed(context.platform);
  const stream = options.stream ?? process.stderr;
  const progress = options.progress ?? createProgress(`[${spec.jobId}]`, stream);
  const driverTimings = { ...context.driverTimings };
  let failure = ending.failure ?? (ending.wait ? failureOfWait(ending.wait) : undefined);
  const engineOutput = (text: string) => options.verbose && stream.write(text);
  let stack = options.stack;
  if (!stack && !ending.nothingCreated) {
    try {
      // Another process's engine may still work on the stack (a launch worker that died left its engine running).
      await engineLetGo(backendUrl(context.backend), spec.jobId, (line) => progress.note(line));
      stack = await openJobStack({ jobId: spec.jobId, backend: context.backend, mustExist: true });
    } catch (err) {
      failure = { outcome: "error", exitCode: ExitCode.infra, reason: "destroy-failed", message: `${errorMessage(err)}\nThe job's resources may still exist: clean up with  npm run job -- cancel ${spec.jobId}` };
    }
  }
  if (stack) {
    writeJobRecord({ ...context.record, state: "destroying" });
    const again = process.env.CLOUDCOMPUTE_WORKER === "1" ? "" : " (Ctrl-C again to leave at once)";
    const why = failure?.reason === "interrupted" ? `interrupted: destroying the job's resources${again}` : failure?.reason === "lease-lost" ? "the subject's lease was lost: destroying the job's resources" : "destroying the job's resources";
    progress.note(why);
    const tDestroy = Date.now();
    try {
      // After an interrupted update, refresh anyway: it drops pending creates the cut-off update left.
      const cutOff = failure?.reason === "interrupted" || failure?.reason === "lease-lost";
      const refresh = platform.refreshBeforeDestroy || cutOff || !context.computeStartedAt;
      const reclaimed = await teardown(stack, spec.jobId, describe(failure, ending.wait), { onOutput: engineOutput, refresh, platform, region: spec.instance.region, log: (line) => progress.note(line) });
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
  driverTimings.total = seconds(computeEndedAt - context.t0);

  const marker = ending.wait?.kind === "marker" ? ending.wait.marker : undefined;
  // Billed from the instance's launch (else the end of up) to the end of destroy, which waits for its termination.
  const billedFrom = context.launchedAt ?? context.computeStartedAt;
  const instanceSeconds = billedFrom ? seconds(computeEndedAt - billedFrom) : undefined;
  // Billed as AWS bills Linux on every platform: a local job given a price (a comparison's "types") is reckoned the
  // same way, so its cost, a comparison's and an estimate's agree.
  const billedSeconds = instanceSeconds === undefined ? undefined : billedSecondsOf(instanceSeconds);
  const prices = options.pricePerHour !== undefined ? flatPrices(options.pricePerHour) : await platform.prices(spec).catch(() => undefined);
  const costUsd = prices && instanceSeconds !== undefined ? attemptCostUsd(instanceSeconds, prices) : undefined;
  const spot = spec.instance.spot && prices?.instance.source === "spot-history";
  const onDemandUsd = spot && prices?.onDemand && instanceSeconds !== undefined ? attemptCostUsd(instanceSeconds, { ...prices, instance: prices.onDemand }) : undefined;
  const attemptCosts: AttemptCost[] = [{ jobId: spec.jobId, spot: spec.instance.spot, billedSeconds, costUsd, ...(onDemandUsd !== undefined ? { onDemandUsd } : {}), ...(failure ? { reason: failure.reason } : {}) }];

  const result: JobResult = {
    ...baseResult(spec, platform.name),
    outcome: failure?.outcome ?? "succeeded",
    exitCode: failure?.exitCode ?? ExitCode.ok,
    reason: failure?.reason,
    message: failure?.message ?? marker?.message ?? "succeeded",
    timings: { driver: driverTimings, agent: marker?.timings ?? {} },
    outputs: marker ? { count: marker.outputs.count, bytes: marker.outputs.bytes, partial: marker.outputs.partial } : undefined,
    instanceSeconds,
    billedSeconds,
    costUsd,
    // The instance's price as costUsd used it (costUsd adds the root volume), with its source and date.
    price: prices?.instance,
    attemptCosts,
    ...withSpotAccount(attemptCosts),
  };
  writeJobRecord({
    ...(readJobRecord(spec.jobId) ?? context.record),
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
    attemptCost: attemptCosts[0],
    ...(prices ? { price: prices.instance } : {}),
    timings: { ...driverTimings, ...Object.fromEntries(Object.entries(result.timings.agent).map(([k, v]) => [`agent.${k}`, v ?? 0])) },
  });
  return result;
}

/**
 * When billing began: the platform's launch time, kept within the up that created it (a clock skewed against EC2's
 * must not bill seconds before up began, nor lose the seconds up itself saw), else undefined.
 */
export function billingStart(launchedAt: number | undefined, upStartedAt: number, upEndedAt: number): number | undefined {
  if (launchedAt === undefined || !Number.isFinite(launchedAt)) return undefined;
  return Math.min(Math.max(launchedAt, upStartedAt), upEndedAt);
}

/** The history message of the destroy: the job's outcome, so `pulumi stack history` tells the story. */
function describe(failure: Failure | undefined, wait: WaitResult | undefined): string {
  if (!failure) return "cloudcompute job: succeeded";
  const detail = wait?.kind === "marker" ? wait.marker.message : "";
  return `cloudcompute job: ${failure.reason}${detail ? ` — ${detail}` : ""}`.slice(0, 500);
}
