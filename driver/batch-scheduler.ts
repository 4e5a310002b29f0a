/**
 * A batch's jobs in one event loop. Per subject: take its lease (held here, renewed by this process for every job in
 * flight), launch in an engine worker, wait on the job here — marker, status, compute, paced for all jobs together —
 * then finish in an engine worker, retrying lost compute. `concurrency` bounds the jobs in flight; `engineConcurrency`
 * the engine workers alive at once, so memory grows with the engines, not with the jobs: a waiting job is a few
 * objects and timers in this process.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { makeJobId } from "../job/layout";
import { errorMessage } from "../common/errors";
import { seconds } from "../common/time";
import type { ResolvedJob } from "./options";
import { ExitCode } from "./errors";
import { holdSubjectLease, SubjectLeasedError, type HeldLease } from "./lease";
import type { SubjectLease } from "../common/lease";
import { currentOwner } from "./owner";
import { platformNamed } from "./platform";
import { waitForCompletion } from "./wait";
import { PollPacer } from "./poll-pacer";
import type { Ending, JobContext } from "./job-phases";
import { attemptCostOfRecord, failureOfError, isRetryable, withEarlierAttempts } from "./job-outcomes";
import type { AttemptCost } from "../job/pricing";
import type { JobEdges, LaunchReply } from "./engine-workers";
import type { JobResult } from "./run";
import type { Progress } from "./progress";
import { stamped, type BatchEventSink, type UnstampedEvent } from "./batch-events";
import type { BatchEntry } from "./batch";
import { alreadySucceeded, entryCosts, entryOf } from "./batch";
import { readJobRecord, updateJobRecord } from "./jobindex";
import { contextOf } from "./batch-resume";

/** A job found running from an earlier run of the same batch (driver/batch-resume.ts): waited on, not launched. */
export interface AdoptedJob {
  context: JobContext;
  lease: HeldLease;
  /** Earlier attempts' job ids. */
  attempts: string[];
}

export interface ScheduleOptions {
  batchId: string;
  logDir: string;
  /** The subjects to run, each resolved (its lease's place and period, its platform); in the batch's order. */
  jobs: ResolvedJob[];
  /** Jobs from an earlier run of this batch that still run, by subject. */
  adopted?: Map<string, AdoptedJob>;
  concurrency: number;
  engineConcurrency: number;
  retries: number;
  rerun: boolean;
  edges: JobEdges;
  signal: AbortSignal;
  sink: BatchEventSink;
  pacer?: PollPacer;
  /** What a resumed subject's earlier attempts cost (they were billed): its relaunch's cost adds to them. */
  earlierCosts?: Map<string, AttemptCost[]>;
  /** Leases an earlier, dead run of this batch holds: taken over (driver/batch-resume.ts). */
  takeOverFrom?: (lease: SubjectLease) => boolean;
}

/** At most `size` holders at once; `force` takes a place beyond it (an adopted job is in flight already). */
export class Slots {
  private used = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly size: number) {}
  async take(): Promise<void> {
    if (this.used < this.size) {
      this.used++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  force(): void {
    this.used++;
  }
  give(): void {
    this.used--;
    // Over the size (adopted jobs forced in), a freed place is not yet room for a newcomer.
    if (this.used < this.size && this.waiting.length > 0) {
      this.used++;
      this.waiting.shift()!();
    }
  }
  async with<T>(work: () => Promise<T>): Promise<T> {
    await this.take();
    try {
      return await work();
    } finally {
      this.give();
    }
  }
}

/**
 * How a batch reports: `emit` stamps an event for the sink; `logLine` appends a line to the subject's log and shows it
 * as a note ("" for the whole batch: no log file). The view and the log files must never end a batch with jobs in
 * flight (a full disk, a deleted log directory).
 */
export function batchReporter(sink: BatchEventSink, logDir: string): { emit: (e: UnstampedEvent) => void; logLine: (subject: string, line: string) => void } {
  const emit = (e: UnstampedEvent) => {
    try {
      sink.event(stamped(e));
    } catch {
      /* shown or not, the jobs go on */
    }
  };
  const logLine = (subject: string, line: string) => {
    if (subject) {
      try {
        fs.appendFileSync(path.join(logDir, `${subject}.log`), `${line}\n`);
      } catch {
        /* as above */
      }
    }
    emit({ event: "note", ...(subject ? { subject } : {}), message: line });
  };
  return { emit, logLine };
}

export async function scheduleJobs(options: ScheduleOptions): Promise<Map<string, BatchEntry>> {
  const entries = new Map<string, BatchEntry>();
  const { emit, logLine } = batchReporter(options.sink, options.logDir);
  const engines = new Slots(options.engineConcurrency);
  const inFlight = new Slots(options.concurrency);
  // Taking a lease and the look that follows are a few S3 requests: a thousand subjects starting at once must not
  // queue behind the S3 client's sockets (it warns, and the leases' first renewals would bunch up).
  const leaseTakes = new Slots(LEASE_TAKES_AT_ONCE);
  const pacer = options.pacer ?? new PollPacer();
  let paceNoted = false;
  let waiting = 0;
  const owner = currentOwner();
  const cancels = new JobCancels(path.join(options.logDir, "cancel"), (jobId) => emit({ event: "note", message: `[${jobId}] cancelled (cancel ${jobId}): tearing it down` }));
  process.on("SIGUSR2", cancels.onRequest);

  const waitOn = async (context: JobContext, signal: AbortSignal, lease: HeldLease, cancel: AbortSignal): Promise<Ending> => {
    const { spec } = context;
    const platform = platformNamed(context.platform);
    let lastPhase: string | undefined;
    const progress: Progress = {
      status: (status) => {
        if (status.phase !== lastPhase) emit({ event: "job-phase", subject: spec.subject, jobId: spec.jobId, phase: status.phase });
        lastPhase = status.phase;
      },
      note: (message) => logLine(spec.subject, `[${spec.jobId}] ${message}`),
      end: () => undefined,
    };
    const tWait = Date.now();
    waiting++;
    // Many jobs share the looks: say so when each is looked at so rarely that its heartbeat could go stale between looks.
    const every = pacer.intervalFor(waiting, platform.pollIntervalMs);
    if (!paceNoted && every > (spec.limits.heartbeatTimeoutSeconds * 1000) / 2) {
      paceNoted = true;
      emit({ event: "note", message: `${waiting} jobs waiting share ${pacer.perSecond} looks a second: each is looked at about every ${Math.round(every / 1000)} s, over half its heartbeat timeout (${spec.limits.heartbeatTimeoutSeconds} s); raise CLOUDCOMPUTE_POLLS_PER_SECOND or heartbeatTimeoutSeconds` });
    }
    try {
      const wait = await waitForCompletion({ spec, platform, instanceId: context.instanceId ?? "", startedAt: context.computeStartedAt ?? Date.now(), signal, progress, pace: (s) => pacer.turn(s) });
      context.driverTimings.wait = seconds(Date.now() - tWait);
      return { wait };
    } catch (err) {
      if (cancel.aborted && !options.signal.aborted && !lease.lost.aborted) return { failure: CANCELLED };
      return { failure: failureOfError(err, spec.jobId, { stackExists: true, computeStarted: true, lease, userSignal: options.signal }) };
    } finally {
      waiting--;
    }
  };

  /** Tear a job down in an engine worker; what it reports, or an error result that says the resources may remain. */
  const finishOf = async (context: JobContext, ending: Ending, note: (line: string) => void): Promise<JobResult> => {
    emit({ event: "job-finishing", subject: context.spec.subject, jobId: context.spec.jobId, reason: ending.failure?.reason });
    const finished = await engines.with(() => options.edges.finish({ op: "finish", context, ending }, note));
    if (finished.kind === "finished") return finished.result;
    const message = `${finished.message}\nThe job's resources may still exist: clean up with  npm run job -- cancel ${context.spec.jobId}`;
    updateJobRecord(context.spec.jobId, { state: "error", reason: "destroy-failed", message: finished.message, driverPid: undefined, driverHost: undefined, driverPidStart: undefined });
    return { ...resultStub(context), outcome: "error", exitCode: ExitCode.infra, reason: "destroy-failed", message };
  };

  const runSubject = async (job: ResolvedJob, adopted: AdoptedJob | undefined): Promise<BatchEntry> => {
    const subject = job.spec.subject;
    // An adopted job's time counts from its launch in the earlier run, not from its adoption.
    const started = adopted?.context.t0 ?? Date.now();
    const logPath = path.join(options.logDir, `${subject}.log`);
    const note = (line: string) => logLine(subject, line);
    let lease: HeldLease;
    try {
      lease = adopted?.lease ?? (await leaseTakes.with(() => holdSubjectLease(job.spec, job.leaseSeconds ?? 300, note, options.takeOverFrom)));
    } catch (err) {
      const held = err instanceof SubjectLeasedError;
      return { subject, outcome: held ? "held" : "error", exitCode: held ? ExitCode.badInput : ExitCode.infra, reason: held ? "held-by-another-driver" : "lease-failed", message: errorMessage(err), logPath };
    }
    try {
      if (!adopted && !options.rerun) {
        // Another driver may have run the subject to success between the batch's look and our lease.
        const done = await leaseTakes.with(() => alreadySucceeded(job));
        if (done) return { subject, outcome: "skipped", exitCode: ExitCode.ok, succeededBefore: done.jobId, message: done.message, logPath };
      }
      const signal = AbortSignal.any([options.signal, lease.lost]);
      const attempts = [...(adopted?.attempts ?? [])];
      // Earlier attempts (of a resumed batch) were billed too: their costs from their records.
      let costs: AttemptCost[] = options.earlierCosts?.get(subject) ?? attempts.map((id) => attemptCostOfRecord(readJobRecord(id) ?? { jobId: id }));
      let result: JobResult | undefined;
      let refused: { exitCode: number; message: string } | undefined;
      let adoptNext = Boolean(adopted);
      for (let attempt = attempts.length + 1; ; attempt++) {
        const isLast = attempt > options.retries;
        let jobId: string;
        let launch: LaunchReply;
        if (adoptNext) {
          adoptNext = false;
          jobId = adopted!.context.spec.jobId;
          launch = { kind: "running", context: adopted!.context };
        } else {
          if (signal.aborted) break;
          jobId = makeJobId(subject);
          const launchId = randomUUID();
          const launchSignal = AbortSignal.any([signal, cancels.of(jobId)]);
          lease.handle.setJob(jobId, launchId);
          emit({ event: "job-launching", subject, jobId, attempt });
          const request = { op: "launch" as const, subject, jobId, launchId, attempt, retryOf: attempts[0], onDemand: job.spec.instance.spot && isLast && attempt > 1, owner };
          launch = await engines.with(async (): Promise<LaunchReply> => {
            if (launchSignal.aborted) return { kind: "refused", exitCode: ExitCode.interrupted, message: "not launched: the batch was interrupted" };
            try {
              await lease.handle.confirm();
            } catch (err) {
              return { kind: "refused", exitCode: ExitCode.infra, message: `${errorMessage(err)}; nothing was created` };
            }
            return options.edges.launch(request, launchSignal, note);
          });
          if (launch.kind === "lost") {
            // The worker died without a word: what it created (its record says) is torn down here, never left running.
            const record = readJobRecord(jobId);
            if (!record) launch = { kind: "refused", exitCode: ExitCode.infra, message: `${launch.message}; nothing was created` };
            else {
              note(`[${jobId}] ${launch.message}; tearing down what it created`);
              const lostResult = await finishOf(contextOf(record, job), { failure: { outcome: "error", exitCode: ExitCode.infra, reason: "engine-worker-lost", message: launch.message } }, note);
              launch = { kind: "ended", result: lostResult };
            }
          }
        }
        if (launch.kind === "refused") {
          refused = { exitCode: launch.exitCode, message: launch.message };
          cancels.forget(jobId);
          break;
        }
        if (launch.kind === "ended") result = launch.result;
        else {
          const { context } = launch;
          const cancel = cancels.of(jobId);
          emit({ event: "job-running", subject, jobId, instanceId: context.instanceId ?? "", adopted: context === adopted?.context });
          const ending = await waitOn(context, AbortSignal.any([signal, cancel]), lease, cancel);
          result = await finishOf(context, ending, note);
        }
        // Why the job ended, when the batch ended it: the user's cancel of this job, or the lease lost to another driver.
        if (result.outcome === "interrupted" && !options.signal.aborted) {
          if (lease.lost.aborted) result = { ...result, outcome: "error", exitCode: ExitCode.infra, reason: "lease-lost", message: `${lease.handle.lost?.message ?? "the subject's lease was lost"}; the job's resources were destroyed` };
          else if (cancels.of(jobId).aborted) result = { ...result, ...CANCELLED };
          // The worker recorded an interrupt; the record says what it was (list, status, a resume read it).
          if (result.reason !== "interrupted") updateJobRecord(jobId, { state: result.outcome === "error" ? "error" : "interrupted", reason: result.reason, message: result.message, exitCode: result.exitCode });
        }
        cancels.forget(jobId);
        result = withEarlierAttempts(costs, result);
        costs = result.attemptCosts ?? [];
        attempts.push(result.jobId);
        result.attempts = [...attempts];
        if (!isRetryable(result) || isLast || signal.aborted) break;
        emit({ event: "job-retry", subject, jobId: result.jobId, reason: result.reason ?? "", attempt: attempt + 1 });
        note(`[${result.jobId}] ${result.reason}: retrying (${attempt}/${options.retries})`);
      }
      const elapsed = seconds(Date.now() - started);
      if (refused) {
        const interrupted = refused.exitCode === ExitCode.interrupted;
        const reason = interrupted ? "interrupted" : refused.exitCode === ExitCode.badInput ? "refused" : "engine-error";
        const before = result ? ` (after ${result.jobId}: ${result.outcome}${result.reason ? `, ${result.reason}` : ""})` : "";
        return { subject, outcome: interrupted ? "interrupted" : "error", exitCode: refused.exitCode, jobId: result?.jobId, reason, message: `${refused.message}${before}`, ...(result ? entryCosts(result) : {}), seconds: elapsed, logPath };
      }
      if (!result) return { subject, outcome: "interrupted", exitCode: ExitCode.interrupted, message: "not started: the batch was interrupted", logPath };
      return { ...entryOf(result), seconds: elapsed, logPath };
    } finally {
      await lease.release();
    }
  };

  const finish = (subject: string, entry: BatchEntry) => {
    entries.set(subject, entry);
    emit({ event: "job-done", subject, jobId: entry.jobId ?? entry.succeededBefore, outcome: entry.outcome, reason: entry.reason, message: entry.message, costUsd: entry.costUsd, seconds: entry.seconds });
  };
  const guarded = (job: ResolvedJob, adopted?: AdoptedJob) =>
    runSubject(job, adopted).catch((err): BatchEntry => ({ subject: job.spec.subject, outcome: "error", exitCode: ExitCode.infra, reason: "driver-error", message: errorMessage(err) }));

  const running: Promise<void>[] = [];
  try {
    // Adopted jobs are in flight already: they hold their places from the start.
    for (const job of options.jobs) {
      const adopted = options.adopted?.get(job.spec.subject);
      if (!adopted) continue;
      inFlight.force();
      running.push(guarded(job, adopted).then((entry) => finish(job.spec.subject, entry)).finally(() => inFlight.give()));
    }
    for (const job of options.jobs) {
      if (options.adopted?.has(job.spec.subject)) continue;
      await inFlight.take();
      if (options.signal.aborted) {
        inFlight.give();
        break;
      }
      running.push(guarded(job).then((entry) => finish(job.spec.subject, entry)).finally(() => inFlight.give()));
    }
    await Promise.all(running);
  } finally {
    process.removeListener("SIGUSR2", cancels.onRequest);
  }
  return entries;
}

/** Subjects whose lease is being taken at once (each take is a read and a conditional write, and a look follows). */
const LEASE_TAKES_AT_ONCE = 16;

/** A job the user cancelled (`cancel <job>`): stopped and torn down; the batch goes on, and exits 1 for it, not 130. */
const CANCELLED = { outcome: "interrupted", exitCode: ExitCode.jobFailed, reason: "cancelled", message: "cancelled (cancel <job>): the job's resources were destroyed" } as const;

/**
 * `cancel <job>` of one job of a batch: a request file in the batch's `cancel/` directory, then SIGUSR2
 * (driver/commands.ts). A request is honoured whenever it comes: at the signal, or when the job is first looked up
 * (a request sent while the batch did not know the job yet).
 */
class JobCancels {
  private readonly controllers = new Map<string, AbortController>();
  constructor(
    private readonly dir: string,
    private readonly said: (jobId: string) => void,
  ) {}
  private requested(jobId: string): boolean {
    return fs.existsSync(path.join(this.dir, jobId));
  }
  /** The job's cancel signal (aborted already if a request is waiting). */
  of(jobId: string): AbortSignal {
    let controller = this.controllers.get(jobId);
    if (!controller) {
      this.controllers.set(jobId, (controller = new AbortController()));
      if (this.requested(jobId)) this.abort(jobId, controller);
    }
    return controller.signal;
  }
  private abort(jobId: string, controller: AbortController): void {
    if (controller.signal.aborted) return;
    this.said(jobId);
    controller.abort();
  }
  readonly onRequest = (): void => {
    for (const [jobId, controller] of this.controllers) if (this.requested(jobId)) this.abort(jobId, controller);
  };
  /** The job ended: its signal and request file go (the file only when honoured: a cancelled job's stays as a record). */
  forget(jobId: string): void {
    this.controllers.delete(jobId);
  }
}

/** A result for a job whose finish never reported (its worker died): the job's names, nothing measured. */
function resultStub(context: JobContext): JobResult {
  const { spec } = context;
  return { jobId: spec.jobId, subject: spec.subject, platform: context.platform, outcome: "error", exitCode: ExitCode.infra, message: "", resultsUrl: context.record.resultsUrl, markerUrl: context.record.markerUrl, logUrl: context.record.logUrl, timings: { driver: context.driverTimings, agent: {} }, attempts: [spec.jobId] };
}
