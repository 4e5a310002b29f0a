/**
 * The inspecting commands that need neither the Pulumi engine nor the stacks: `status` and `list` read the local job
 * index (and, for status, the agent's records in S3). Kept apart from commands.ts so they start without loading the
 * Automation API (~1 s).
 */
import { parseS3Url } from "../job/s3url";
import type { AgentStatus, CompletionMarker } from "../job/records";
import { BadInputError } from "./errors";
import { JobRecord, JobState, latestJob, listJobRecords, readJobRecord, recordOwner } from "./jobindex";
import { ownerState } from "./owner";
import { cloudcomputeHome } from "../common/paths";
import { formatBytes } from "./progress";
import { printable } from "./summary";

/** The job a command is about: the given id, else the latest job in the index. */
export function jobRecordFor(jobId: string | undefined): JobRecord {
  const record = jobId ? readJobRecord(jobId) : latestJob();
  if (!record) throw new BadInputError(jobId ? `no job "${jobId}" in the local job index (${cloudcomputeHome()}/jobs)` : "no jobs yet");
  return record;
}

export interface JobStatusReport {
  record: JobRecord;
  driverAlive: boolean;
  status?: AgentStatus;
  marker?: CompletionMarker;
}

export async function jobStatus(jobId?: string): Promise<JobStatusReport> {
  const record = jobRecordFor(jobId);
  // Loaded here, not at the top: `list` needs no AWS SDK. The parsers are zod-free (job/records.ts would load zod).
  const { parseAgentStatus, parseCompletionMarker } = require("../job/record-parsers") as typeof import("../job/record-parsers");
  const { readRecord } = require("./s3") as typeof import("./s3");
  const [status, marker] = await Promise.all([
    readRecord(parseS3Url(record.statusUrl), parseAgentStatus).catch(() => undefined),
    readRecord(parseS3Url(record.markerUrl), parseCompletionMarker).catch(() => undefined),
  ]);
  return { record, driverAlive: ownerState(recordOwner(record)) === "alive", status, marker };
}

export function formatStatus(report: JobStatusReport): string {
  const { record, status, marker } = report;
  const lines = [`job ${record.jobId} (${record.subject}, ${record.platform}): ${record.state}${record.reason ? ` [${record.reason}]` : ""}`];
  if (record.message && record.state !== "succeeded") lines.push(`  ${printable(record.message.split("\n")[0])}`);
  lines.push(`  started ${record.createdAt}${record.endedAt ? `, ended ${record.endedAt}` : ""}`);
  if (status) {
    const p = status.phases[status.phase];
    const bytes = p && (p.bytesDone || p.bytesTotal) ? `, ${formatBytes(p.bytesDone)}${p.bytesTotal ? ` of ${formatBytes(p.bytesTotal)}` : ""}` : "";
    lines.push(`  agent phase ${status.phase} (updated ${status.updatedAt})${status.message ? `: ${printable(status.message)}` : ""}${bytes}`);
  }
  if (marker) lines.push(`  marker: ${marker.outcome}${marker.reason ? ` (${marker.reason})` : ""}: ${printable(marker.message).replace(/^(succeeded|failed): /, "")}`);
  if (!report.driverAlive && ["creating", "running", "destroying"].includes(record.state)) {
    lines.push(`  its driver (pid ${record.driverPid}) is gone: clean up with  npm run job -- cancel ${record.jobId}`);
  }
  lines.push(`  results ${record.resultsUrl}`);
  return lines.join("\n") + "\n";
}

/** What `list` can select by; every given filter must hold. Dates compare with the job's start (createdAt). */
export interface JobFilter {
  batch?: string;
  subject?: string;
  outcome?: JobState;
  /** ISO date or time: jobs started at or after it. */
  since?: string;
  /** ISO date or time: jobs started before it (a bare date means the end of that day). */
  until?: string;
}

export const JOB_STATES: readonly JobState[] = ["creating", "running", "destroying", "succeeded", "failed", "interrupted", "error"];

/** A `--since`/`--until` value as an ISO instant; a bare date is that day's start (since) or the next day's (until). */
export function filterInstant(flag: "since" | "until", value: string): string {
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const time = Date.parse(dateOnly ? `${value}T00:00:00Z` : value);
  if (!/^\d{4}-\d{2}-\d{2}([T ].*)?$/.test(value) || Number.isNaN(time)) {
    throw new BadInputError(`--${flag} ${value}: expected a date (2026-11-29) or an ISO time (2026-11-29T10:00:00Z)`);
  }
  return new Date(dateOnly && flag === "until" ? time + 86_400_000 : time).toISOString();
}

/** The filter from `list`'s flags, each checked (a mistyped outcome or date is refused, not matched against nothing). */
export function jobFilter(flags: { batch?: string; subject?: string; outcome?: string; since?: string; until?: string }): JobFilter {
  const filter: JobFilter = {};
  for (const flag of ["batch", "subject", "outcome", "since", "until"] as const) {
    if (flags[flag] === "") throw new BadInputError(`--${flag} is empty: give a value, or leave the flag out`);
  }
  if (flags.batch !== undefined) filter.batch = flags.batch;
  if (flags.subject !== undefined) filter.subject = flags.subject;
  if (flags.outcome !== undefined) {
    if (!JOB_STATES.includes(flags.outcome as JobState)) throw new BadInputError(`--outcome ${flags.outcome}: expected one of ${JOB_STATES.join(", ")}`);
    filter.outcome = flags.outcome as JobState;
  }
  if (flags.since !== undefined) filter.since = filterInstant("since", flags.since);
  if (flags.until !== undefined) filter.until = filterInstant("until", flags.until);
  if (filter.since && filter.until && filter.since >= filter.until) throw new BadInputError(`--since ${flags.since} is not before --until ${flags.until}`);
  return filter;
}

export function matchesFilter(record: JobRecord, filter: JobFilter): boolean {
  if (filter.batch !== undefined && record.batchId !== filter.batch) return false;
  if (filter.subject !== undefined && record.subject !== filter.subject) return false;
  if (filter.outcome !== undefined && record.state !== filter.outcome) return false;
  // createdAt is an ISO instant (toISOString): string order is time order.
  const started = record.createdAt;
  if (filter.since !== undefined && started < filter.since) return false;
  if (filter.until !== undefined && started >= filter.until) return false;
  return true;
}

/** The indexed jobs that match, oldest first. */
export function listJobs(filter: JobFilter = {}): JobRecord[] {
  return listJobRecords().filter((record) => matchesFilter(record, filter));
}
