/**
 * Names and places derived from a spec: stack names, the S3 layout of a job, the agent's work directory, container
 * names and the paths the container sees. Every part (driver, stack program, user-data, agent) takes them from here
 * so they cannot drift apart.
 */
import * as path from "node:path";
import { formatS3Url, joinKey, parseS3Url, S3Location } from "./s3url";
import type { JobSpec, OutputLayout } from "./spec";
import { bidsSubject } from "./subject";

/** Private area name under the output prefix. Subjects cannot start with '_', so it never collides with results. */
export const CONTROL_DIR = "_cloudcompute";
/** The tag every AWS resource of a job carries (infra/aws.ts): how the driver finds them (gc --aws, reclaim). */
export const JOB_TAG = "cloudcompute:job";
/** Per-subject records in the private area (results pointers); a reserved job id (job/spec.ts). */
export const SUBJECTS_DIR = "subjects";

/** The file names of a job's records in its private area (`<prefix>/_cloudcompute/<jobId>/<name>`). */
export const RECORD_NAMES = {
  spec: "spec.json",
  status: "status.json",
  log: "agent.log",
  provenance: "provenance.json",
  marker: "marker.json",
  bootstrapLog: "bootstrap.log",
} as const;

/** What a job id (a stack name) may be: Pulumi's rules, and never a path (no '/', no leading '.'). */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function isJobId(value: string): boolean {
  return JOB_ID_PATTERN.test(value);
}

/**
 * A stack name (and job id) per job that satisfies Pulumi's rules (letters, digits, '-', '_', '.'; ≤ 100 chars) and
 * sorts by time for one subject: `job-<subject>-<YYYYMMDDTHHMMSSmmmZ>`.
 */
export function makeJobId(subject: string, at: Date = new Date()): string {
  const stamp = at.toISOString().replace(/[-:]/g, "").replace(".", ""); // 20261125T211900123Z
  return `job-${subject.replace(/[^A-Za-z0-9._-]/g, "-")}-${stamp}`;
}

/** The UTC start time encoded in a job id made by `makeJobId`, if any. */
export function jobIdTime(jobId: string): Date | undefined {
  const m = /-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(jobId);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, ms] = m;
  return new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s, +ms));
}

/**
 * Where `run --compare` puts each type's job: `<prefix>/_comparisons/<comparisonId>/<type>/`, a prefix of its own, so
 * its results, results pointer and lease are never the subject's real ones (a batch still sees the subject as not
 * done). A folder starting with '_' is never a subject's, and nothing else lists it.
 */
export const COMPARISONS_DIR = "_comparisons";

export function comparisonPrefix(outputPrefix: string, comparisonId: string, instanceType: string): string {
  const prefix = parseS3Url(outputPrefix);
  return formatS3Url({ bucket: prefix.bucket, key: joinKey(prefix.key, COMPARISONS_DIR, comparisonId, instanceType) + "/" });
}

/** The BIDS-derivatives description kept at the output prefix with layout bids (agent/dataset-description.ts). */
export const DATASET_DESCRIPTION = "dataset_description.json";

/** The folder under the output prefix holding a subject's results: the subject id, or `sub-<label>` for bids. */
export function resultsDirName(subject: string, layout: OutputLayout = "subject"): string {
  return layout === "bids" ? bidsSubject(subject) : subject;
}

/** What jobLayout needs of a spec; `outputs.layout` may be left out (unparsed callers): "subject". */
export type LayoutSpec = Pick<JobSpec, "jobId" | "subject"> & { outputs: { prefix: string; layout?: OutputLayout }; launchId?: string };

export interface JobLayout {
  /** `<prefix>/<subject>/` (layout bids: `<prefix>/sub-<label>/`): where results go. */
  results: S3Location;
  /** `<prefix>/dataset_description.json`, written once per prefix; only with layout bids. */
  datasetDescription?: S3Location;
  /** `<prefix>/_cloudcompute/<jobId>/`: the job's private area. */
  control: S3Location;
  spec: S3Location;
  status: S3Location;
  log: S3Location;
  provenance: S3Location;
  /** The completion marker, written last by the agent. */
  marker: S3Location;
  /** The instance's bootstrap log, uploaded by the user-data when bootstrap fails. */
  bootstrapLog: S3Location;
  /** Where the job uploads its outputs (a prefix, per launch); a successful job then promotes them to `results`. */
  outputs: S3Location;
  /**
   * The results pointer: which job's outputs `results` holds, and their list (agent/promote.ts). One per results
   * folder (`subjects/<folder>/results.json`), so the pointer always describes the folder it sits beside.
   */
  resultsPointer: S3Location;
  /** The subject's run lease (common/lease.ts): which driver runs a job of this subject now, until when. */
  subjectLease: S3Location;
}

export function jobLayout(spec: LayoutSpec): JobLayout {
  const prefix = parseS3Url(spec.outputs.prefix);
  const at = (...parts: string[]): S3Location => ({ bucket: prefix.bucket, key: joinKey(prefix.key, ...parts) });
  const controlKey = (name: string) => at(CONTROL_DIR, spec.jobId, name);
  const folder = resultsDirName(spec.subject, spec.outputs.layout);
  return {
    results: { bucket: prefix.bucket, key: joinKey(prefix.key, folder) + "/" },
    ...(spec.outputs.layout === "bids" ? { datasetDescription: at(DATASET_DESCRIPTION) } : {}),
    control: { bucket: prefix.bucket, key: joinKey(prefix.key, CONTROL_DIR, spec.jobId) + "/" },
    spec: controlKey(RECORD_NAMES.spec),
    status: controlKey(RECORD_NAMES.status),
    log: controlKey(RECORD_NAMES.log),
    provenance: controlKey(RECORD_NAMES.provenance),
    marker: controlKey(RECORD_NAMES.marker),
    bootstrapLog: controlKey(RECORD_NAMES.bootstrapLog),
    // Per launch: two launches under one job id (a reused stack name on two backends sharing the prefix, a second
    // `pulumi up`) never upload into one set, so a promotion copies only what its own job wrote.
    outputs: { bucket: prefix.bucket, key: joinKey(prefix.key, CONTROL_DIR, spec.jobId, ...(spec.launchId ? ["launch", spec.launchId] : []), "outputs") + "/" },
    resultsPointer: at(CONTROL_DIR, SUBJECTS_DIR, folder, "results.json"),
    subjectLease: at(CONTROL_DIR, SUBJECTS_DIR, folder, "lease.json"),
  };
}

/** Keys of what a launch writes to the job's private area (all but spec.json): stale once a new launch starts. */
export function launchRecordKeys(spec: LayoutSpec): string[] {
  const layout = jobLayout(spec);
  return [layout.marker, layout.status, layout.provenance, layout.log, layout.bootstrapLog].map((loc) => loc.key);
}

/** Where a content-addressed agent bundle lives under an output prefix. Shared by all jobs writing there. */
export function agentBundleLocation(outputPrefix: string, sha256: string): S3Location {
  const prefix = parseS3Url(outputPrefix);
  return { bucket: prefix.bucket, key: joinKey(prefix.key, CONTROL_DIR, "agent", `agent-${sha256}.js`) };
}

/**
 * The completion marker beside a staged spec: where the agent reports a spec it cannot read (it then knows no
 * job id or prefix, only the spec's own location, which is in the job's private area by layout).
 */
export function markerBesideSpec(spec: S3Location): S3Location {
  return { bucket: spec.bucket, key: joinKey(path.posix.dirname(spec.key), RECORD_NAMES.marker) };
}

export function markerUrl(spec: LayoutSpec): string {
  return formatS3Url(jobLayout(spec).marker);
}

/**
 * The agent's local work directory (`--workdir`): inputs and outputs (the subject's data, which the local platform
 * removes when the job ends) and the full job log.
 */
export const WORKDIR_NAMES = {
  inputs: "inputs",
  outputs: "outputs",
  log: RECORD_NAMES.log,
} as const;

/** Containers the agent starts are named `cloudcompute-<jobId>-<pid>`: the local platform finds leftovers by it. */
export const CONTAINER_NAME_PREFIX = "cloudcompute-";

/** The name of the container the agent (process `pid`) runs for a job; only characters every runtime accepts. */
export function jobContainerName(jobId: string, pid: number): string {
  return `${CONTAINER_NAME_PREFIX}${jobId}-${pid}`.replace(/[^A-Za-z0-9_.-]/g, "-");
}

/** Paths inside the container (and under the agent's work directory for runtime `none`). */
export const CONTAINER_PATHS = {
  workdir: "/data",
  inputs: "/data/inputs",
  output: "/data/outputs",
} as const;
