/**
 * Resume: a batch started again with the same arguments after its process died without finishing (killed, a crashed
 * machine) continues that run instead of starting another. Same batch id; its jobs still running are adopted — waited
 * on, never launched again; a job cut off mid-launch or mid-teardown is torn down; subjects whose job ended keep their
 * result; the rest are launched. No subject is launched twice: an adopted job's lease is taken over from the dead
 * process (If-Match its etag, only when the lease names that process and job), so no other driver can have it.
 *
 * The earlier run is found by its journal (`batch.json` in the batch's directory): the batch's key (a hash of its
 * arguments, subjects and directory) and its process. Only a run whose process is provably gone is resumed.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { cloudcomputeHome } from "../common/paths";
import { errorMessage } from "../common/errors";
import { redactSpec } from "../job/spec";
import { belongsToLaunch, parseCompletionMarker } from "../job/records";
import { parseS3Url } from "../job/s3url";
import { ExitCode } from "./errors";
import { listJobRecords, readJobRecord, updateJobRecord, type JobRecord } from "./jobindex";
import { currentOwner, ownerState, type Owner } from "./owner";
import { ENGINE_WORKER_FLAG } from "./engine-workers";
import { BATCH_ID_ENV } from "./worker-env";
import { holdSubjectLease } from "./lease";
import { readRecord } from "./s3";
import type { ResolvedJob } from "./options";
import type { JobContext, Ending } from "./job-phases";
import type { JobEdges } from "./engine-workers";
import type { AdoptedJob } from "./batch-scheduler";
import type { BatchEntry } from "./batch";

export interface BatchJournal {
  kind: "batch-journal";
  batchId: string;
  key: string;
  owner: Owner;
  startedAt: string;
  /** Each later start that resumed this run. */
  resumedAt?: string[];
}

/** What makes two starts "the same batch": its job flags, subjects (with their own inputs), --rerun, and directory. */
export function batchKey(parts: { workerArgs: string[]; subjects: string[]; subjectArgs: string[][]; rerun: boolean; cwd: string }): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 32);
}

const batchesDir = () => path.join(cloudcomputeHome(), "batches");

export function writeJournal(logDir: string, journal: BatchJournal): void {
  const file = path.join(logDir, "batch.json");
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(journal, null, 2) + "\n");
  fs.renameSync(`${file}.tmp`, file);
}

function readJournal(dir: string): BatchJournal | undefined {
  try {
    const journal = JSON.parse(fs.readFileSync(path.join(dir, "batch.json"), "utf8")) as BatchJournal;
    return journal?.kind === "batch-journal" && typeof journal.key === "string" ? journal : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The latest unfinished run of this batch (no summary written) whose process is provably gone, or undefined. A run
 * whose process lives is left to it: its subjects are held (their leases), and this start reports them so.
 */
export function findResumable(key: string): BatchJournal | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(batchesDir());
  } catch {
    return undefined;
  }
  const runs = names
    .map((name) => ({ dir: path.join(batchesDir(), name), journal: readJournal(path.join(batchesDir(), name)) }))
    .filter((run): run is { dir: string; journal: BatchJournal } => run.journal?.key === key)
    .sort((a, b) => b.journal.startedAt.localeCompare(a.journal.startedAt));
  const latest = runs[0];
  if (!latest || fs.existsSync(path.join(latest.dir, "summary.json"))) return undefined;
  return ownerState(latest.journal.owner) === "dead" ? latest.journal : undefined;
}

const FINAL_STATES = new Set(["succeeded", "failed", "error", "interrupted"]);

/**
 * Engine workers of the batch still alive: a worker whose batch dies finishes the phase it started (an up reaches
 * "running", a destroy completes), and only then is the job's record settled. Found by their command line and
 * environment in /proc (Linux; the same user may read both); the agents they started are not workers.
 */
export function liveEngineWorkers(batchId: string): number[] {
  let entries: string[];
  try {
    entries = fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  return entries.map(Number).filter((pid) => {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!argv.includes(`--${ENGINE_WORKER_FLAG}`)) return false;
      return fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`${BATCH_ID_ENV}=${batchId}`);
    } catch {
      return false;
    }
  });
}

async function engineWorkersDone(batchId: string, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + 30 * 60_000;
  let said = false;
  for (let live = liveEngineWorkers(batchId); live.length > 0 && Date.now() < deadline; live = liveEngineWorkers(batchId)) {
    if (!said) log(`waiting for ${live.length} engine worker(s) of the earlier run (pid ${live.join(", ")}) to finish the launch or teardown they started`);
    said = true;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function contextOf(record: JobRecord, job: ResolvedJob): JobContext {
  return {
    spec: redactSpec({ ...job.spec, jobId: record.jobId, launchId: record.launchId }),
    platform: job.platform,
    backend: job.backend,
    agentBundlePath: job.agentBundlePath,
    record,
    t0: Date.parse(record.createdAt),
    computeStartedAt: record.runningAt ? Date.parse(record.runningAt) : undefined,
    instanceId: record.instanceId,
    driverTimings: {},
  };
}

/** How a job whose teardown was cut off ended: its own marker of this launch, if it wrote one. */
async function endingOf(record: JobRecord): Promise<Ending> {
  const marker = await readRecord(parseS3Url(record.markerUrl), parseCompletionMarker).catch(() => undefined);
  if (marker && record.launchId && belongsToLaunch(marker, { launchId: record.launchId })) return { wait: { kind: "marker", marker } };
  return { failure: { outcome: "interrupted", exitCode: ExitCode.interrupted, reason: "interrupted", message: "the batch's process died while the job ran; its teardown was finished on resume" } };
}

export interface Resumed {
  adopted: Map<string, AdoptedJob>;
  /** Subjects whose job in the earlier run ended (or was ended now): their result, not launched again. */
  finished: Map<string, BatchEntry>;
}

/**
 * The earlier run's jobs, subject by subject (the latest job of each): running ones adopted with their lease, ones
 * cut off mid-launch torn down (the subject is then launched afresh), ones cut off mid-teardown torn down and
 * reported, ended ones reported. `jobs` are this start's resolved jobs (the adopted job's spec is rebuilt from them).
 */
/** `log(subject, line)`: subject "" for lines about the whole batch. */
export async function resumeJobs(journal: BatchJournal, jobs: ResolvedJob[], edges: JobEdges, log: (subject: string, line: string) => void): Promise<Resumed> {
  const resumed: Resumed = { adopted: new Map(), finished: new Map() };
  await engineWorkersDone(journal.batchId, (line) => log("", line));
  const bySubject = new Map(jobs.map((job) => [job.spec.subject, job]));
  const latest = new Map<string, JobRecord>();
  for (const record of listJobRecords().filter((r) => r.batchId === journal.batchId && bySubject.has(r.subject))) {
    const seen = latest.get(record.subject);
    if (!seen || seen.createdAt <= record.createdAt) latest.set(record.subject, record);
  }
  const dead = journal.owner;
  const us = currentOwner();
  for (const [subject, record] of latest) {
    const job = bySubject.get(subject)!;
    const note = (line: string) => log(subject, line);
    const attempts = listJobRecords().filter((r) => r.batchId === journal.batchId && r.subject === subject && r.jobId !== record.jobId).map((r) => r.jobId);
    if (FINAL_STATES.has(record.state)) {
      // Interrupted subjects are launched again; any other end is the subject's result in this batch.
      if (record.state !== "interrupted") resumed.finished.set(subject, { subject, outcome: record.state === "succeeded" ? "succeeded" : (record.state as BatchEntry["outcome"]), exitCode: record.exitCode ?? ExitCode.jobFailed, jobId: record.jobId, reason: record.reason, message: `${record.message ?? record.state} (in the earlier run of this batch)`, costUsd: record.costUsd });
      continue;
    }
    const context = contextOf(record, job);
    if (record.state === "running") {
      try {
        // Ours to take over only if the dead process holds it for this very job.
        const lease = await holdSubjectLease({ ...job.spec, jobId: record.jobId, launchId: record.launchId }, job.leaseSeconds ?? 300, note, (held) =>
          held.holder.host === dead.host && held.holder.pid === dead.pid && (held.holder.pidStart ?? "") === dead.pidStart && held.holder.jobId === record.jobId,
        );
        updateJobRecord(record.jobId, { driverPid: us.pid, driverHost: us.host, driverPidStart: us.pidStart });
        note(`[${record.jobId}] adopted: still running on ${record.instanceId} since ${record.runningAt ?? record.createdAt}`);
        resumed.adopted.set(subject, { context: { ...context, record: readJobRecord(record.jobId) ?? record }, lease, attempts });
        continue;
      } catch (err) {
        // Another driver runs the subject now (the lease expired and was taken): this job is a duplicate, ended here.
        note(`[${record.jobId}] not adopted: ${errorMessage(err)}; tearing it down`);
        const reply = await edges.finish({ op: "finish", context, ending: { failure: { outcome: "error", exitCode: ExitCode.infra, reason: "lease-lost", message: `while the batch was down, ${errorMessage(err)}` } } }, note);
        resumed.finished.set(subject, reply.kind === "finished" ? { subject, outcome: reply.result.outcome, exitCode: reply.result.exitCode, jobId: record.jobId, reason: reply.result.reason, message: reply.result.message } : { subject, outcome: "error", exitCode: reply.exitCode, jobId: record.jobId, reason: "destroy-failed", message: reply.message });
        continue;
      }
    }
    // Cut off mid-launch (no compute to wait on) or mid-teardown: finish it. A launch cut off is launched afresh.
    const ending = record.state === "creating" ? { failure: { outcome: "interrupted" as const, exitCode: ExitCode.interrupted, reason: "interrupted", message: "the batch's process died during the launch; torn down on resume" } } : await endingOf(record);
    note(`[${record.jobId}] ${record.state === "creating" ? "cut off during its launch" : "cut off during its teardown"}: tearing it down`);
    const reply = await edges.finish({ op: "finish", context, ending }, note);
    if (reply.kind !== "finished") {
      resumed.finished.set(subject, { subject, outcome: "error", exitCode: reply.exitCode, jobId: record.jobId, reason: "destroy-failed", message: reply.message });
    } else if (record.state !== "creating") {
      resumed.finished.set(subject, { subject, outcome: reply.result.outcome, exitCode: reply.result.exitCode, jobId: record.jobId, reason: reply.result.reason, message: reply.result.message, costUsd: reply.result.costUsd });
    }
  }
  return resumed;
}
