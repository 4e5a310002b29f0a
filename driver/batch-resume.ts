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
import { ExitCode, InfraError } from "./errors";
import { attemptCostOfRecord, costOfAttempts, isRetryable, withEarlierAttempts } from "./job-outcomes";
import type { AttemptCost } from "../job/pricing";
import type { SubjectLease } from "../common/lease";
import { listJobRecords, readJobRecord, updateJobRecord, type JobRecord } from "./jobindex";
import { currentOwner, ownerState, type Owner } from "./owner";
import { ENGINE_WORKER_FLAG } from "./engine-workers";
import { BATCH_ID_ENV } from "./worker-env";
import { holdSubjectLease, SubjectLeasedError, type HeldLease } from "./lease";
import { readRecord } from "./s3";
import type { ResolvedJob } from "./options";
import type { JobContext, Ending } from "./job-phases";
import type { JobEdges } from "./engine-workers";
import type { AdoptedJob } from "./batch-scheduler";
import { entryCosts, entryOf, type BatchEntry } from "./batch";
import { writeFileWhole } from "../common/files";

export interface BatchJournal {
  kind: "batch-journal";
  batchId: string;
  key: string;
  /** The process running the batch now (the last of `owners`). */
  owner: Owner;
  /** Every process that ran this batch, first to last: leases any of them left are the batch's own. */
  owners?: Owner[];
  startedAt: string;
  /** Each later start that resumed this run. */
  resumedAt?: string[];
}

/**
 * What makes two starts "the same batch": every subject's job as resolved (the config file's content, flags, inputs,
 * region and prefix; not the fresh job ids), where its stacks live, and --rerun. A config edited between a crash and
 * the restart makes another batch, never one that adopts jobs it would wait on at the wrong prefix or region.
 */
export function batchKey(jobs: ResolvedJob[], rerun: boolean): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ rerun }));
  for (const job of jobs) hash.update(JSON.stringify([job.platform, job.backend ?? "", redactSpec({ ...job.spec, jobId: "" })]));
  return hash.digest("hex").slice(0, 32);
}

/** Did one of the batch's own processes hold this lease (host, PID and its start time)? */
export function heldByBatch(journal: BatchJournal, lease: SubjectLease): boolean {
  return (journal.owners ?? [journal.owner]).some((o) => lease.holder.host === o.host && lease.holder.pid === o.pid && (lease.holder.pidStart ?? "") === o.pidStart);
}

const batchesDir = () => path.join(cloudcomputeHome(), "batches");

export function writeJournal(logDir: string, journal: BatchJournal): void {
  const file = path.join(logDir, "batch.json");
  writeFileWhole(file, JSON.stringify(journal, null, 2) + "\n");
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
 * The latest unfinished run of this batch (no summary written) whose processes are all provably gone, claimed for this
 * process (an exclusive `claim` file in its directory: of two starts at once, one resumes; the other finds the run
 * claimed by a live process and starts a batch of its own, whose subjects are then held). Linux only: elsewhere a
 * process cannot be proven gone, and nothing is resumed.
 */
export function claimResumable(key: string): BatchJournal | undefined {
  if (!fs.existsSync("/proc/self/stat")) return undefined;
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
  if ((latest.journal.owners ?? [latest.journal.owner]).some((o) => ownerState(o) !== "dead")) return undefined;
  return claimBatch(latest.dir) ? latest.journal : undefined;
}

/** Take the batch directory's claim for this process, unless a live process holds it. Released by `releaseBatch`. */
export function claimBatch(dir: string): boolean {
  const file = path.join(dir, "claim");
  for (let tries = 0; tries < 3; tries++) {
    try {
      fs.writeFileSync(file, JSON.stringify(currentOwner()), { flag: "wx" });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      let holder: Owner | undefined;
      try {
        holder = JSON.parse(fs.readFileSync(file, "utf8")) as Owner;
      } catch {
        /* being written: look again */
      }
      if (holder && ownerState(holder) !== "dead") return false;
      if (holder) fs.rmSync(file, { force: true }); // its process is gone
    }
  }
  return false;
}

export function releaseBatch(dir: string): void {
  fs.rmSync(path.join(dir, "claim"), { force: true });
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
  for (let live = liveEngineWorkers(batchId); live.length > 0; live = liveEngineWorkers(batchId)) {
    // Never past a live worker: its job's record is not settled, and acting on it could launch the subject twice.
    if (Date.now() > deadline) throw new InfraError(`engine workers of the earlier run of ${batchId} (pid ${live.join(", ")}) are still working after 30 minutes: nothing was resumed; start the batch again once they have ended`);
    if (!said) log(`waiting for ${live.length} engine worker(s) of the earlier run (pid ${live.join(", ")}) to finish the launch or teardown they started`);
    said = true;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** A job's context rebuilt from its record and this start's resolution of the subject's job (same key: same spec). */
export function contextOf(record: JobRecord, job: ResolvedJob): JobContext {
  return {
    // Spot as this job ran (a last retry runs on demand whatever the batch's spec says): its price follows from it.
    spec: redactSpec({ ...job.spec, jobId: record.jobId, launchId: record.launchId, instance: { ...job.spec.instance, spot: record.spot ?? job.spec.instance.spot } }),
    platform: job.platform,
    backend: job.backend,
    agentBundlePath: job.agentBundlePath,
    record,
    t0: Date.parse(record.createdAt),
    computeStartedAt: record.runningAt ? Date.parse(record.runningAt) : undefined,
    launchedAt: record.launchedAt ? Date.parse(record.launchedAt) : undefined,
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
  /** Subjects launched again (interrupted, or a retryable failure): what their earlier attempts cost. */
  earlierCosts: Map<string, AttemptCost[]>;
}

/**
 * The earlier run's jobs, subject by subject (the latest job of each): running ones adopted with their lease, ones
 * cut off mid-launch torn down (the subject is then launched afresh), ones cut off mid-teardown torn down and
 * reported, ended ones reported. `jobs` are this start's resolved jobs (the adopted job's spec is rebuilt from them).
 */
/** `log(subject, line)`: subject "" for lines about the whole batch. */
export async function resumeJobs(journal: BatchJournal, jobs: ResolvedJob[], edges: JobEdges, log: (subject: string, line: string) => void, options: { retries: number } = { retries: 0 }): Promise<Resumed> {
  const resumed: Resumed = { adopted: new Map(), finished: new Map(), earlierCosts: new Map() };
  await engineWorkersDone(journal.batchId, (line) => log("", line));
  const bySubject = new Map(jobs.map((job) => [job.spec.subject, job]));
  // One read of the job index for the whole batch (a study's index holds tens of thousands of records).
  const ofBatch = listJobRecords().filter((r) => r.batchId === journal.batchId && bySubject.has(r.subject));
  const latest = new Map<string, JobRecord>();
  for (const record of ofBatch) {
    const seen = latest.get(record.subject);
    if (!seen || seen.createdAt <= record.createdAt) latest.set(record.subject, record);
  }
  const us = currentOwner();
  const retryable = (record: JobRecord) => isRetryable({ reason: record.reason, message: record.message ?? "" }) && (record.attempt ?? 1) <= options.retries;
  for (const [subject, record] of latest) {
    const job = bySubject.get(subject)!;
    const note = (line: string) => log(subject, line);
    const earlier = ofBatch.filter((r) => r.subject === subject && r.jobId !== record.jobId).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const attempts = earlier.map((r) => r.jobId);
    // Every attempt was billed: what ends here, or is launched again, adds to what the earlier attempts cost.
    const earlierCosts = earlier.map(attemptCostOfRecord);
    const context = contextOf(record, job);
    const teardown = async (ending: Ending): Promise<BatchEntry> => {
      const reply = await edges.finish({ op: "finish", context, ending }, note);
      if (reply.kind === "finished") return { ...entryOf(withEarlierAttempts(earlierCosts, reply.result)), subject, jobId: record.jobId };
      return { subject, outcome: "error", exitCode: ExitCode.infra, jobId: record.jobId, reason: "destroy-failed", message: `${reply.message}\nThe job's resources may still exist: clean up with  npm run job -- cancel ${record.jobId}` };
    };
    if (FINAL_STATES.has(record.state)) {
      // A teardown that failed gets another; an interrupted job or a retryable failure is launched again; any
      // other end (a cancel included) is the subject's result in this batch.
      if (record.reason === "destroy-failed") resumed.finished.set(subject, await teardown({ failure: { outcome: "error", exitCode: ExitCode.infra, reason: "destroy-failed", message: record.message ?? "an earlier teardown failed" } }));
      else if ((record.state === "interrupted" && record.reason !== "cancelled") || retryable(record)) {
        resumed.earlierCosts.set(subject, [...earlierCosts, attemptCostOfRecord(record)]);
        continue;
      } else {
        const costs = [...earlierCosts, attemptCostOfRecord(record)];
        const message = `${record.message ?? record.state} (in the earlier run of this batch)`;
        resumed.finished.set(subject, { subject, outcome: record.state as BatchEntry["outcome"], exitCode: record.exitCode ?? ExitCode.jobFailed, jobId: record.jobId, reason: record.reason, message, ...entryCosts({ ...costOfAttempts(costs), attemptCosts: costs }) });
      }
      continue;
    }
    if (record.state === "running") {
      let lease: HeldLease;
      try {
        // Ours to take over only if one of the batch's own dead processes holds it, for this very job.
        lease = await holdSubjectLease({ ...job.spec, jobId: record.jobId, launchId: record.launchId }, job.leaseSeconds ?? 300, note, (held) => heldByBatch(journal, held) && held.holder.jobId === record.jobId);
      } catch (err) {
        // Anything but another driver's lease (an S3 outage, a timeout) says nothing about the job: stop, change nothing.
        if (!(err instanceof SubjectLeasedError)) throw new InfraError(`resuming ${journal.batchId}: ${errorMessage(err)}; nothing was torn down — start the batch again`);
        // Another driver runs the subject now (the lease expired while the batch was down): this job is a duplicate.
        note(`[${record.jobId}] not adopted: ${errorMessage(err)}; tearing it down`);
        resumed.finished.set(subject, await teardown({ failure: { outcome: "error", exitCode: ExitCode.infra, reason: "lease-lost", message: `while the batch was down, ${errorMessage(err)}` } }));
        continue;
      }
      updateJobRecord(record.jobId, { driverPid: us.pid, driverHost: us.host, driverPidStart: us.pidStart });
      note(`[${record.jobId}] adopted: still running on ${record.instanceId} since ${record.runningAt ?? record.createdAt}`);
      resumed.adopted.set(subject, { context: { ...context, record: readJobRecord(record.jobId) ?? record }, lease, attempts });
      continue;
    }
    // Cut off mid-launch (no compute to wait on): torn down, the subject launched afresh. Mid-teardown: finished.
    note(`[${record.jobId}] ${record.state === "creating" ? "cut off during its launch" : "cut off during its teardown"}: tearing it down`);
    if (record.state === "creating") {
      const entry = await teardown({ failure: { outcome: "interrupted", exitCode: ExitCode.interrupted, reason: "interrupted", message: "the batch's process died during the launch; torn down on resume" } });
      if (entry.reason === "destroy-failed") resumed.finished.set(subject, entry);
    } else resumed.finished.set(subject, await teardown(await endingOf(record)));
  }
  return resumed;
}
