/**
 * The local job index: one small JSON file per job under `$CLOUDCOMPUTE_HOME/jobs/`. `list` and `status` read it
 * instead of listing the backend's stacks, which is slow and memory-hungry with many stacks. One file per job means
 * concurrent workers never write the same file; each write is a rename, so readers never see half a record.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isJobId } from "../job/layout";
import type { PlatformName } from "../job/platform";
import type { Owner } from "./owner";
import { jobIndexDir } from "../common/paths";

export type JobState = "creating" | "running" | "destroying" | "succeeded" | "failed" | "interrupted" | "error";

export interface JobRecord {
  jobId: string;
  subject: string;
  platform: PlatformName;
  backend: string;
  state: JobState;
  createdAt: string;
  endedAt?: string;
  /** The driver process working on the job while it runs: `cancel` signals it, `gc` checks it is alive. */
  driverPid?: number;
  /** Its host and start time: a PID alone may have been reused by another process (driver/owner.ts). */
  driverHost?: string;
  driverPidStart?: string;
  /** The region of the job's compute: `gc --aws` looks for orphaned instances in every recorded region. */
  region?: string;
  markerUrl: string;
  resultsUrl: string;
  statusUrl: string;
  logUrl: string;
  instanceId?: string;
  /** This launch's nonce: a marker found later (by cancel or gc) counts only if it carries it. */
  launchId?: string;
  /** Failure reason from the marker or the driver (instance-lost, heartbeat-lost, max-runtime, up-failed, ...). */
  reason?: string;
  message?: string;
  exitCode?: number;
  instanceSeconds?: number;
  costUsd?: number;
  /** 1 for the first attempt; retries after spot interruptions count up. */
  attempt?: number;
  /** The job this one retries. */
  retryOf?: string;
  timings?: Record<string, number>;
  /** The batch that ran it (driver/batch.ts), absent for a single `run`: `list --batch` selects by it. */
  batchId?: string;
}

function recordPath(jobId: string): string {
  if (!isJobId(jobId)) throw new Error(`"${jobId}" is not a job id`);
  return path.join(jobIndexDir(), `${jobId}.json`);
}

export function writeJobRecord(record: JobRecord): void {
  const file = recordPath(record.jobId);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(record, null, 2) + "\n");
  fs.renameSync(tmp, file);
}

export function readJobRecord(jobId: string): JobRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(recordPath(jobId), "utf8")) as JobRecord;
  } catch {
    return undefined;
  }
}

export function updateJobRecord(jobId: string, patch: Partial<JobRecord>): JobRecord | undefined {
  const current = readJobRecord(jobId);
  if (!current) return undefined;
  const next = { ...current, ...patch };
  writeJobRecord(next);
  return next;
}

/** Every indexed job, oldest first. */
export function listJobRecords(): JobRecord[] {
  let names: string[];
  try {
    names = fs.readdirSync(jobIndexDir()).filter((name) => name.endsWith(".json"));
  } catch {
    return [];
  }
  const records: JobRecord[] = [];
  for (const name of names) {
    const record = readJobRecord(name.slice(0, -".json".length));
    if (record) records.push(record);
  }
  return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.jobId.localeCompare(b.jobId));
}

/** The most recent job (of a subject, if given): what `status` and `logs` show without a job id. */
export function latestJob(subject?: string): JobRecord | undefined {
  const records = listJobRecords().filter((record) => !subject || record.subject === subject);
  return records[records.length - 1];
}

export function isProcessAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The owner of a job as its record names it. */
export function recordOwner(record: JobRecord): Partial<Owner> | undefined {
  return record.driverPid ? { host: record.driverHost, pid: record.driverPid, pidStart: record.driverPidStart } : undefined;
}
