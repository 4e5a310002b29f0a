/**
 * The local job index: one small JSON file per job under `$CLOUDCOMPUTE_HOME/jobs/`. `list` and `status` read it
 * instead of listing the backend's stacks, which is slow and memory-hungry with many stacks. One file per job means
 * concurrent workers never write the same file; each write is a rename, so readers never see half a record.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { AttemptCost, Price } from "../job/pricing";
import { isJobId } from "../job/layout";
import type { PlatformName } from "../job/platform";
import type { Owner } from "./owner";
import { jobIndexDir } from "../common/paths";
import { writeFileWhole } from "../common/files";

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
  /** When `up` finished and the compute started: an adopted job's wait (max runtime, boot allowance) counts from here. */
  runningAt?: string;
  /** This launch's nonce: a marker found later (by cancel or gc) counts only if it carries it. */
  launchId?: string;
  /** Failure reason from the marker or the driver (instance-lost, heartbeat-lost, max-runtime, up-failed, ...). */
  reason?: string;
  message?: string;
  exitCode?: number;
  instanceSeconds?: number;
  costUsd?: number;
  /** The instance type, and the price its cost was reckoned at (source and date): a cost traceable after the fact. */
  instanceType?: string;
  price?: Price;
  /** Whether this attempt ran on spot (a batch's last retry runs on demand), and when EC2 launched its instance (billing's start). */
  spot?: boolean;
  launchedAt?: string;
  /** This attempt as billed (spot or not, and on-demand's price for the same seconds): a resumed batch sums attempts from it. */
  attemptCost?: AttemptCost;
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
  writeFileWhole(file, JSON.stringify(record, null, 2) + "\n");
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

/**
 * A compact copy of every record, `jobs/.index` (not a .json name: never taken for a job), so `list` does not open
 * 10,000 files: one read, plus a stat per record file. An entry is used only while its file's inode, size and mtime
 * are unchanged (every write is a rename, so a new inode), else the file is read again: the copy is never staler than
 * the files, and a lost or broken copy is only rebuilt. Written by whichever reader found it out of date.
 */
interface IndexEntry {
  ino: number;
  size: number;
  mtimeMs: number;
  record: JobRecord;
}

const INDEX_VERSION = 1;

export function compactIndexPath(): string {
  return path.join(jobIndexDir(), ".index");
}

function readCompactIndex(): Map<string, IndexEntry> {
  try {
    const index = JSON.parse(fs.readFileSync(compactIndexPath(), "utf8")) as { version: number; entries: Record<string, IndexEntry> };
    if (index.version === INDEX_VERSION && index.entries && typeof index.entries === "object") return new Map(Object.entries(index.entries));
  } catch {
    /* none yet, or unreadable: rebuilt from the files */
  }
  return new Map();
}

function writeCompactIndex(entries: Map<string, IndexEntry>): void {
  const file = compactIndexPath();
  try {
    writeFileWhole(file, JSON.stringify({ version: INDEX_VERSION, entries: Object.fromEntries(entries) }));
  } catch {
    /* a read-only home still lists, just slower */
  }
}

/** Every indexed job, oldest first. */
export function listJobRecords(): JobRecord[] {
  const dir = jobIndexDir();
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((name) => name.endsWith(".json"));
  } catch {
    return [];
  }
  const cached = readCompactIndex();
  const current = new Map<string, IndexEntry>();
  let changed = names.length !== cached.size;
  for (const name of names) {
    const jobId = name.slice(0, -".json".length);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(path.join(dir, name));
    } catch {
      changed = true; // removed meanwhile
      continue;
    }
    const hit = cached.get(jobId);
    if (hit && hit.ino === stat.ino && hit.size === stat.size && hit.mtimeMs === stat.mtimeMs) {
      current.set(jobId, hit);
      continue;
    }
    changed = true;
    // Stat before read: if the file is replaced in between, the next list sees another inode and reads it again.
    const record = readJobRecord(jobId);
    if (record) current.set(jobId, { ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs, record });
  }
  if (changed) writeCompactIndex(current);
  const records = [...current.values()].map((entry) => entry.record);
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
