/**
 * The batch's running totals, kept from its events: how many jobs are queued, in flight and done, how fast they
 * finish, what they have cost so far and when the batch should end. Pure arithmetic on the events and a clock, so
 * the live view (driver/batch-view.ts) only draws it.
 */
import type { BatchEvent, JobStage } from "./batch-events";
import { formatCost } from "./summary";

/** Outcomes of subjects that were not run in this batch: they count in no rate and no ETA. */
const NOT_RUN = new Set(["skipped", "held"]);

interface JobState {
  stage: JobStage;
  /** The agent's phase (inputs, run, outputs) once it reports one. */
  phase?: string;
  /** When (clock ms) the current attempt's instance started running: spend counts from here. */
  runningSince?: number;
  /** Estimated spend of earlier attempts (a retry's predecessors). */
  earlierUsd: number;
}

export class BatchTally {
  batchId?: string;
  total: number;
  toRun: number;
  skipped = 0;
  held = 0;
  adopted = 0;
  concurrency?: number;
  engineConcurrency?: number;
  pricePerHour?: number;
  logDir?: string;
  /** Clock ms of batch-start: the rate counts from here. */
  startedAt?: number;
  /** Finished jobs by outcome (skipped and held included, kept apart from the rate). */
  readonly outcomes: Record<string, number> = {};
  /** Jobs finished this run (not skipped or held). */
  finished = 0;
  /** Sum of finished jobs' costs. */
  doneUsd = 0;
  ended?: Extract<BatchEvent, { event: "batch-end" }>;
  private readonly jobs = new Map<string, JobState>();
  /** Subjects that left the queue (launched, adopted, or finished without a launch). */
  private readonly dequeued = new Set<string>();

  constructor(
    private readonly now: () => number,
    total = 0,
  ) {
    this.total = total;
    this.toRun = total;
  }

  /** Takes one event into the totals. */
  add(e: BatchEvent): void {
    const t = this.now();
    switch (e.event) {
      case "batch-start":
        Object.assign(this, {
          batchId: e.batchId,
          total: e.total,
          toRun: e.toRun,
          skipped: e.skipped,
          held: e.held,
          adopted: e.adopted,
          concurrency: e.concurrency,
          engineConcurrency: e.engineConcurrency,
          pricePerHour: e.pricePerHour,
          logDir: e.logDir,
          startedAt: t,
        });
        return;
      case "job-launching": {
        const job = this.job(e.subject);
        job.stage = "launching";
        job.phase = undefined;
        return;
      }
      case "job-running": {
        const job = this.job(e.subject);
        job.stage = "running";
        job.runningSince ??= t;
        return;
      }
      case "job-phase":
        this.job(e.subject).phase = e.phase;
        return;
      case "job-finishing":
        this.job(e.subject).stage = "finishing";
        return;
      case "job-retry": {
        // The failed attempt's instance is gone: its spend so far stays, the next attempt counts from its own start.
        const job = this.job(e.subject);
        job.earlierUsd += this.runningUsd(job, t);
        job.runningSince = undefined;
        job.stage = "queued";
        return;
      }
      case "job-done": {
        this.outcomes[e.outcome] = (this.outcomes[e.outcome] ?? 0) + 1;
        const job = this.jobs.get(e.subject);
        this.jobs.delete(e.subject);
        if (NOT_RUN.has(e.outcome) || e.earlierRun) return;
        this.dequeued.add(e.subject);
        this.finished++;
        // A job's reported cost covers its attempts; without one, what it was estimated to cost so far.
        this.doneUsd += e.costUsd ?? (job ? job.earlierUsd + this.runningUsd(job, t) : 0);
        return;
      }
      case "batch-end":
        this.ended = e;
        return;
      case "note":
        return;
    }
  }

  /** A job in flight by subject (launching, running or finishing), created as it leaves the queue. */
  private job(subject: string): JobState {
    let job = this.jobs.get(subject);
    if (!job) {
      job = { stage: "queued", earlierUsd: 0 };
      this.jobs.set(subject, job);
      this.dequeued.add(subject);
    }
    return job;
  }

  private runningUsd(job: JobState, t: number): number {
    if (job.runningSince === undefined || this.pricePerHour === undefined) return 0;
    return (Math.max(0, t - job.runningSince) / 3_600_000) * this.pricePerHour;
  }

  get queued(): number {
    return Math.max(0, this.toRun - this.dequeued.size);
  }

  /** Jobs launching, running or finishing (a retry waiting to relaunch included). */
  get inFlight(): number {
    return this.jobs.size;
  }

  get succeeded(): number {
    return this.outcomes.succeeded ?? 0;
  }

  /** Finished this run without success (failed, error, interrupted, ...). */
  get failed(): number {
    return this.finished - this.succeeded;
  }

  /** Subjects in flight with what they are doing (their phase once the agent reports one), in launch order. */
  inFlightJobs(): { subject: string; doing: string }[] {
    return [...this.jobs].map(([subject, job]) => ({ subject, doing: job.stage === "queued" ? "retrying" : job.stage === "running" && job.phase ? job.phase : job.stage }));
  }

  /** Jobs finished per minute since batch-start; undefined until one has finished. */
  jobsPerMinute(): number | undefined {
    if (this.startedAt === undefined || this.finished === 0) return undefined;
    const minutes = (this.now() - this.startedAt) / 60_000;
    return minutes > 0 ? this.finished / minutes : undefined;
  }

  /** Finished jobs' costs plus running jobs' time so far at the batch's price per hour. */
  spentUsd(): number {
    const t = this.now();
    let usd = this.doneUsd;
    for (const job of this.jobs.values()) usd += job.earlierUsd + this.runningUsd(job, t);
    return usd;
  }

  /** Minutes left at the rate so far; undefined while the rate is unknown. */
  etaMinutes(): number | undefined {
    const remaining = this.queued + this.inFlight;
    if (remaining === 0) return 0;
    const rate = this.jobsPerMinute();
    return rate === undefined ? undefined : remaining / rate;
  }

  /** `running 12 · done 30 · failed 2 · queued 956 · 4.1 jobs/min · spent $3.20 · ETA 3h52m` */
  countsLine(): string {
    const rate = this.jobsPerMinute();
    const eta = this.etaMinutes();
    return [
      `running ${this.inFlight}`,
      `done ${this.succeeded}`,
      `failed ${this.failed}`,
      `queued ${this.queued}`,
      `${rate === undefined ? "—" : formatRate(rate)} jobs/min`,
      `spent ${formatCost(this.spentUsd())}`,
      `ETA ${eta === undefined ? "—" : formatEta(eta)}`,
    ].join(" · ");
  }
}

/** Two significant figures below 10 (hour-long jobs finish well under one a minute), whole numbers above. */
export function formatRate(perMinute: number): string {
  if (perMinute >= 10) return perMinute.toFixed(0);
  if (perMinute >= 1) return perMinute.toFixed(1);
  return perMinute.toPrecision(2);
}

/** Minutes as `3h52m`, `12m`, `<1m`. */
export function formatEta(minutes: number): string {
  if (minutes <= 0) return "0m";
  const whole = Math.round(minutes);
  if (whole < 1) return "<1m";
  const h = Math.floor(whole / 60);
  return h > 0 ? `${h}h${String(whole % 60).padStart(2, "0")}m` : `${whole}m`;
}
