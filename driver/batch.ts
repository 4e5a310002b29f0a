/**
 * Batch: one job per subject, at most `concurrency` in flight, waited on together in this process while short-lived
 * engine workers create and destroy their stacks (driver/batch-scheduler.ts). Subjects that already succeeded are
 * skipped unless `rerun`; subjects another driver holds are reported, not run. One failure does not stop the others;
 * an interrupt tears every job down before the batch exits.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { jobLayout, resultsDirName } from "../job/layout";
import { parseCompletionMarker, parseResultsPointer } from "../job/records";
import type { OutputLayout } from "../job/spec";
import { formatS3Url } from "../job/s3url";
import { cloudcomputeHome } from "../common/paths";
import { BadInputError, ExitCode } from "./errors";
import { readSubjectsList } from "./subjects";
import { readRecord } from "./s3";
import type { JobResult } from "./run";
import type { ResolvedJob } from "./options";
import { formatCost, table } from "./summary";
import { liveLeaseOf } from "./lease";
import { platformNamed } from "./platform";
import { engineWorkerEdges, type JobEdges } from "./engine-workers";
import { batchReporter, scheduleJobs, type AdoptedJob } from "./batch-scheduler";
import { claimBatch, claimResumable, heldByBatch, releaseBatch, resumeJobs, writeJournal } from "./batch-resume";
import { currentOwner } from "./owner";
import { PollPacer } from "./poll-pacer";
import type { SubjectLease } from "../common/lease";
import type { BatchJournal } from "./batch-resume";
import type { BatchEventSink } from "./batch-events";
import { totalUsdPerHour, type AttemptCost, type Price } from "../job/pricing";
import { batchViewMode, createBatchView } from "./batch-view";
import { batchTotals } from "./batch-totals";
import { writeBatchReport } from "./batch-report";

export interface BatchOptions {
  /** Each subject's job, resolved by the batch's command, in the batch's order (one output prefix and layout). */
  jobs: ResolvedJob[];
  /** Jobs in flight at most (launching, running or being torn down). */
  concurrency: number;
  /** Engine workers (stack create or destroy) alive at once. */
  engineConcurrency: number;
  retries: number;
  rerun: boolean;
  pricePerHour?: number;
  /** Arguments for each engine worker besides `--subject` (config file, overrides, platform, ...). */
  workerArgs: string[];
  /** Arguments for one subject's worker only (its subjects-file inputs); they travel with workerArgs, never in argv. */
  subjectArgs?: (subject: string) => string[];
  signal: AbortSignal;
  /** Events as JSON lines on stdout instead of the view on stderr. */
  json?: boolean;
  /** What makes this start the same batch as an earlier one (driver/batch-resume.ts batchKey): an unfinished run of it is resumed. */
  key?: string;
  /** Stand-ins for a benchmark: the engine phases, and where events go. */
  edges?: JobEdges;
  sink?: BatchEventSink;
}

export interface BatchEntry {
  subject: string;
  /** held: another driver runs the subject (its lease); nothing was started for it here. */
  outcome: JobResult["outcome"] | "skipped" | "held";
  exitCode: number;
  jobId?: string;
  reason?: string;
  message?: string;
  /** The earlier successful job, for skipped subjects. */
  succeededBefore?: string;
  /** The instance type and the price its cost was reckoned at, with source and date. */
  instanceType?: string;
  price?: Price;
  /** Every attempt's cost, summed; with costIncomplete some attempt's cost is unknown and this is a lower bound. */
  costUsd?: number;
  costIncomplete?: boolean;
  /** Wall seconds the batch spent on the subject, every attempt included. */
  seconds?: number;
  /** The instance's seconds as AWS bills them (60 s minimum). */
  billedSeconds?: number;
  /** The subject's results: set only when this job succeeded (a failed job's results folder is not its output). */
  resultsUrl?: string;
  /** The job's log in S3. */
  logUrl?: string;
  /** The batch's own log of the subject (driver/batch-scheduler.ts). */
  logPath?: string;
  /** Spot and lost attempts (job/pricing.ts SpotAccount): what spot saved against on demand, what lost attempts cost, and the net. */
  spotSavedUsd?: number;
  interruptionCostUsd?: number;
  spotNetSavedUsd?: number;
}

/** What a subject's attempts cost, as its entry says it: their sum and billed seconds, and spot's account. */
export function entryCosts(result: Pick<JobResult, "costUsd" | "costIncomplete" | "billedSeconds" | "attemptCosts" | "spot">): Partial<BatchEntry> {
  // Every attempt is billed: a retried job's billed seconds are all of its attempts'.
  const attempts = result.attemptCosts ?? [];
  const billedSeconds = attempts.length > 1 && attempts.every((a) => a.billedSeconds !== undefined) ? attempts.reduce((sum, a) => sum + a.billedSeconds!, 0) : result.billedSeconds;
  const { spot } = result;
  return {
    costUsd: result.costUsd,
    ...(result.costIncomplete ? { costIncomplete: true } : {}),
    billedSeconds,
    ...(spot ? { spotSavedUsd: spot.savedUsd, interruptionCostUsd: spot.interruptionsUsd, spotNetSavedUsd: spot.netSavedUsd } : {}),
  };
}

/** A subject's entry from its job's result (the fields a batch reports of it). */
export function entryOf(result: JobResult): BatchEntry {
  return {
    subject: result.subject, outcome: result.outcome, exitCode: result.exitCode, jobId: result.jobId, reason: result.reason, message: result.message,
    ...(result.instanceType ? { instanceType: result.instanceType } : {}), ...(result.price ? { price: result.price } : {}),
    ...entryCosts(result), resultsUrl: result.outcome === "succeeded" ? result.resultsUrl : undefined, logUrl: result.logUrl || undefined,
  };
}

export interface BatchResult {
  batchId: string;
  entries: BatchEntry[];
  exitCode: number;
  summaryPath: string;
  /** The page beside summary.json (driver/batch-report.ts). */
  reportPath?: string;
  /** This run of the batch: its start and end (ISO). */
  startedAt?: string;
  endedAt?: string;
}

/** Subjects from a file: one per line (or the first column of a CSV/TSV), `#` comments and blank lines ignored. */
export function readSubjectsFile(file: string): string[] {
  return readSubjectsList(file).subjects;
}

/**
 * Refuse a batch whose subjects share a results folder (layout bids: `01` and `sub-01`, `HCP_1` and `HCP1`): their
 * jobs would replace each other's results, so the batch would not start (the agent refuses it too, after the run).
 */
export function checkDistinctFolders(subjects: string[], layout: OutputLayout = "subject"): void {
  const byFolder = new Map<string, string[]>();
  for (const subject of subjects) byFolder.set(resultsDirName(subject, layout), [...(byFolder.get(resultsDirName(subject, layout)) ?? []), subject]);
  const shared = [...byFolder].filter(([, names]) => names.length > 1).map(([folder, names]) => `${names.join(", ")} → ${folder}/`);
  if (shared.length > 0) {
    throw new BadInputError(`subjects share a results folder with layout ${layout}, so their results would replace each other: ${shared.join("; ")}; list one of each, or use layout subject`);
  }
}

/**
 * The job whose results the subject holds, if they are a success: the subject's results pointer names it and says
 * its promotion completed, and that job's marker — parsed, of this subject and this launch — says it succeeded.
 * Anything else (no pointer, a promotion cut off, a failed or foreign marker) means the subject still needs a run.
 */
export async function findSuccess(outputPrefix: string, subject: string, layout: OutputLayout = "subject"): Promise<string | undefined> {
  const layoutOf = (jobId: string) => jobLayout({ jobId, subject, outputs: { prefix: outputPrefix, layout } });
  const pointer = await readRecord(layoutOf("-").resultsPointer, parseResultsPointer);
  if (!pointer || pointer.complete === false) return undefined;
  const marker = await readRecord(layoutOf(pointer.jobId).marker, parseCompletionMarker);
  if (!marker || marker.outcome !== "succeeded" || marker.subject !== subject || marker.jobId !== pointer.jobId) return undefined;
  if (pointer.launchId && marker.launchId !== pointer.launchId) return undefined;
  return pointer.jobId;
}

/**
 * A batch holding the subject's lease looks once more: another driver may have run the subject to success
 * between the batch's look and the lease (it released the lease when done). Then the worker runs nothing.
 */
export async function alreadySucceeded(resolved: ResolvedJob): Promise<JobResult | undefined> {
  const { spec } = resolved;
  const earlier = await findSuccess(spec.outputs.prefix, spec.subject, spec.outputs.layout);
  if (!earlier) return undefined;
  const layout = jobLayout({ ...spec, jobId: earlier });
  return {
    jobId: earlier,
    subject: spec.subject,
    platform: resolved.platform,
    outcome: "skipped",
    exitCode: ExitCode.ok,
    message: `already succeeded as ${earlier} (run meanwhile by another driver)`,
    resultsUrl: formatS3Url(layout.results),
    markerUrl: formatS3Url(layout.marker),
    logUrl: formatS3Url(layout.log),
    timings: { driver: {}, agent: {} },
    attempts: [],
  };
}

/** Subjects looked at at once before the batch starts (their earlier success and their lease: two S3 reads each). */
const LOOKS_AT_ONCE = 16;

/** `work` for every item, at most `limit` at a time, results in order. */
async function mapLimited<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await work(items[i]);
  }));
  return results;
}

export async function runBatch(options: BatchOptions): Promise<BatchResult> {
  const pacer = new PollPacer(); // a bad CLOUDCOMPUTE_POLLS_PER_SECOND is refused before any job is touched
  const now = new Date().toISOString();
  // The same batch started again after its process died: continue that run (driver/batch-resume.ts).
  const earlier = options.key ? claimResumable(options.key) : undefined;
  const batchId = earlier?.batchId ?? `batch-${now.replace(/[-:.]/g, "")}`;
  const logDir = path.join(cloudcomputeHome(), "batches", batchId);
  fs.mkdirSync(logDir, { recursive: true });
  const us = currentOwner();
  const journal: BatchJournal | undefined = options.key
    ? { kind: "batch-journal", batchId, key: options.key, owner: us, owners: [...(earlier?.owners ?? (earlier ? [earlier.owner] : [])), us], startedAt: earlier?.startedAt ?? now, ...(earlier ? { resumedAt: [...(earlier.resumedAt ?? []), now] } : {}) }
    : undefined;
  if (journal) {
    if (!earlier) claimBatch(logDir);
    writeJournal(logDir, journal);
  }
  const sink = options.sink ?? createBatchView({ mode: batchViewMode({ json: Boolean(options.json), stream: process.stderr }), stream: options.json ? process.stdout : process.stderr, total: options.jobs.length });
  const { emit, logLine } = batchReporter(sink, logDir);
  const entries = new Map<string, BatchEntry>();
  const subjects = options.jobs.map((job) => job.spec.subject);
  const { prefix, layout } = options.jobs[0].spec.outputs;
  const edges = options.edges ?? engineWorkerEdges({ batchId, workerArgs: options.workerArgs, subjectArgs: options.subjectArgs, logDir });
  // `cancel <job>` signals SIGUSR2 for one job (batch-scheduler.ts acts on it); never the default action, death.
  const ignoreStrayCancel = () => undefined;
  process.on("SIGUSR2", ignoreStrayCancel);
  try {
    let adopted = new Map<string, AdoptedJob>();
    let earlierCosts: Map<string, AttemptCost[]> | undefined;
    // Leases the batch's dead processes held for subjects not adopted (not launched yet, or finished) are its own to take.
    const takeOverFrom = earlier && ((lease: SubjectLease) => heldByBatch(earlier, lease));
    if (earlier) {
      emit({ event: "note", message: `resuming ${batchId}: its process (pid ${earlier.owner.pid}, started ${earlier.startedAt}) is gone; adopting its running jobs` });
      const resumed = await resumeJobs(earlier, options.jobs, edges, logLine, { retries: options.retries });
      adopted = resumed.adopted;
      earlierCosts = resumed.earlierCosts;
      for (const [subject, entry] of resumed.finished) entries.set(subject, entry);
    }
    // Done before (its results pointer and marker), or run by another driver now (its live lease): not started here.
    // A look that fails (S3 unreachable) leaves the subject to its lease, which the scheduler takes: never fatal here.
    const looks = await mapLimited(options.jobs, LOOKS_AT_ONCE, async (job): Promise<BatchEntry | undefined> => look(job).catch(() => undefined));
    async function look(job: ResolvedJob): Promise<BatchEntry | undefined> {
      const subject = job.spec.subject;
      if (adopted.has(subject) || entries.has(subject)) return undefined;
      const previous = options.rerun ? undefined : await findSuccess(prefix, subject, layout);
      if (previous) return { subject, outcome: "skipped", exitCode: 0, succeededBefore: previous, message: `already succeeded as ${previous} (--rerun runs it again)` } satisfies BatchEntry;
      const held = await liveLeaseOf(prefix, subject, layout);
      return held && !takeOverFrom?.(held.lease) ? ({ subject, outcome: "held", exitCode: ExitCode.badInput, reason: "held-by-another-driver", message: held.message } satisfies BatchEntry) : undefined;
    }
    for (const entry of looks) if (entry) entries.set(entry.subject, entry);
    const pending = options.jobs.filter((job) => !entries.has(job.spec.subject));
    const finishedBefore = [...entries.values()].filter((e) => e.outcome !== "skipped" && e.outcome !== "held").length;
    const count = (outcome: string) => [...entries.values()].filter((e) => e.outcome === outcome).length;
    const prices = await platformNamed(options.jobs[0].platform).prices(options.jobs[0].spec).catch(() => undefined);
    const price = prices && totalUsdPerHour(prices);
    emit({
      event: "batch-start", batchId, total: subjects.length, toRun: pending.length - adopted.size, skipped: count("skipped"), held: count("held"), adopted: adopted.size, endedEarlier: finishedBefore,
      concurrency: options.concurrency, engineConcurrency: options.engineConcurrency, pricePerHour: options.pricePerHour ?? price, logDir,
    });
    for (const entry of entries.values()) {
      const earlierRun = entry.outcome !== "skipped" && entry.outcome !== "held";
      emit({ event: "job-done", subject: entry.subject, jobId: entry.jobId ?? entry.succeededBefore, outcome: entry.outcome, reason: entry.reason, message: entry.message, ...(earlierRun ? { earlierRun } : {}) });
    }
    const ran = await scheduleJobs({ batchId, logDir, jobs: pending, adopted, concurrency: options.concurrency, engineConcurrency: options.engineConcurrency, retries: options.retries, rerun: options.rerun, edges, signal: options.signal, sink, takeOverFrom, pacer, earlierCosts });
    for (const [subject, entry] of ran) entries.set(subject, entry);
    for (const job of pending) {
      const subject = job.spec.subject;
      if (!entries.has(subject)) entries.set(subject, { subject, outcome: "interrupted", exitCode: ExitCode.interrupted, message: "not started: the batch was interrupted" });
    }
    const ordered = subjects.map((subject) => entries.get(subject)!);
    const summaryPath = path.join(logDir, "summary.json");
    const result: BatchResult = { batchId, entries: ordered, exitCode: batchExitCode(ordered, options.signal.aborted), summaryPath, startedAt: now, endedAt: new Date().toISOString() };
    result.reportPath = writeBatchReport(result); // report.html beside summary.json; unset if it could not be written
    fs.writeFileSync(summaryPath, JSON.stringify(result, null, 2) + "\n");
    const { counts, costUsd, spotSavedUsd, interruptionCostUsd, spotNetSavedUsd, unknownCostSubjects } = batchTotals(ordered);
    const optional = Object.fromEntries(Object.entries({ spotSavedUsd, interruptionCostUsd, spotNetSavedUsd }).filter(([, v]) => v !== undefined));
    emit({ event: "batch-end", batchId, exitCode: result.exitCode, counts, costUsd, ...(unknownCostSubjects > 0 ? { unknownCostSubjects } : {}), ...optional, summaryPath });
    return result;
  } finally {
    process.removeListener("SIGUSR2", ignoreStrayCancel);
    if (journal) releaseBatch(logDir);
    sink.close();
  }
}

/** 130 if interrupted, else 3 if any infrastructure error, else 1 if any job failed, else 0. */
export function batchExitCode(entries: BatchEntry[], interrupted: boolean): number {
  if (interrupted || entries.some((e) => e.exitCode === ExitCode.interrupted)) return ExitCode.interrupted;
  if (entries.some((e) => e.exitCode === ExitCode.infra || e.exitCode === ExitCode.badInput)) return ExitCode.infra;
  if (entries.some((e) => e.exitCode !== 0)) return ExitCode.jobFailed;
  return ExitCode.ok;
}

export function batchTable(result: BatchResult): string {
  const { counts } = batchTotals(result.entries);
  return (
    table(
      ["SUBJECT", "OUTCOME", "JOB", "REASON", "SECONDS", "COST"],
      // Subjects skipped as done before are counted below, not listed: a study has thousands.
      result.entries.filter((e) => e.outcome !== "skipped").map((e) => [e.subject, e.outcome, e.jobId ?? e.succeededBefore ?? "", e.reason ?? "", e.seconds === undefined ? "" : String(e.seconds), e.costUsd === undefined ? "" : formatCost(e.costUsd)]),
    ) + `${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ")}; summary ${result.summaryPath}${result.reportPath ? `, report ${result.reportPath}` : ""}\n`
  );
}
