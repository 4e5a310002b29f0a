/**
 * What the agent writes to the job's private area and the driver reads: status (a heartbeat with progress),
 * the completion marker (written last) and the provenance record. Shared types so both sides agree.
 *
 * Status and marker are read back from S3, where anything with write access to the job's area could have put them:
 * readers parse them (`parseCompletionMarker`, `parseAgentStatus`), never cast: the schemas below say what is valid,
 * record-parsers.ts checks it without loading zod. Writers (agent, user-data renderer) build them with the builders
 * below, so every writer emits the same shape.
 */
import { z } from "zod";
import { API_VERSION } from "./api-version";
import { FAILURE_REASONS, PHASES } from "./record-parsers";

export { FAILURE_REASONS, parseAgentStatus, parseCompletionMarker, PHASES } from "./record-parsers";

export const Phase = z.enum(PHASES);
export type Phase = z.infer<typeof Phase>;

export const PhaseProgress = z.object({
  bytesDone: z.number().nonnegative(),
  bytesTotal: z.number().nonnegative().optional(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
});
export type PhaseProgress = z.infer<typeof PhaseProgress>;

export const AgentStatus = z.object({
  jobId: z.string(),
  /** The launch this status belongs to (spec.launchId); absent only in records of agents older than the nonce. */
  launchId: z.string().optional(),
  /** The EC2 instance the agent runs on (from IMDS), when it runs on one. */
  instanceId: z.string().optional(),
  phase: Phase,
  /** ISO time of this update; the driver treats an old one as a stale heartbeat. */
  updatedAt: z.string(),
  startedAt: z.string(),
  phases: z.partialRecord(Phase, PhaseProgress),
  message: z.string().optional(),
  /** Written by the user-data while the instance boots (the agent is not running yet). */
  booting: z.boolean().optional(),
});
export type AgentStatus = z.infer<typeof AgentStatus>;

/** Why a job failed (FAILURE_REASONS). Each has one meaning; the driver and users match on it. */
export const FailureReason = z.enum(FAILURE_REASONS);
export type FailureReason = z.infer<typeof FailureReason>;

export const OutputObject = z.object({
  key: z.string(),
  size: z.number().nonnegative(),
  sha256: z.string(),
});
export type OutputObject = z.infer<typeof OutputObject>;

export const CompletionMarker = z.object({
  apiVersion: z.literal(API_VERSION),
  jobId: z.string(),
  /** The launch this marker ends (spec.launchId): a marker of another launch says nothing about this one. */
  launchId: z.string().optional(),
  /** The EC2 instance that wrote it, when known (agent: IMDS; user-data: IMDS). */
  instanceId: z.string().optional(),
  subject: z.string(),
  outcome: z.enum(["succeeded", "failed"]),
  /** The phase that failed, for failures. */
  phase: z.union([Phase, z.literal("bootstrap")]).optional(),
  reason: FailureReason.optional(),
  /** Human-readable detail, e.g. "presigned URL expired at 2026-11-25T10:00:00Z". */
  message: z.string(),
  exitCode: z.number().int().optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string(),
  /** Where results went, how many objects and bytes. */
  outputs: z.object({ prefix: z.string(), count: z.number().int().nonnegative(), bytes: z.number().nonnegative(), partial: z.boolean() }),
  /** Seconds spent per phase. */
  timings: z.partialRecord(Phase, z.number()),
});
export type CompletionMarker = z.infer<typeof CompletionMarker>;

/**
 * The subject's results pointer (`_cloudcompute/subjects/<subject>/results.json`, agent/promote.ts): which job's
 * outputs `<prefix>/<subject>/` holds. `complete: false` while (or because) a promotion was cut off.
 */
export const ResultsPointer = z.object({
  apiVersion: z.literal(API_VERSION),
  jobId: z.string(),
  launchId: z.string().optional(),
  /** The subject whose results the folder holds: two subjects sharing a folder (bids labels drop '_', '.', '-') never replace each other's. */
  subject: z.string().optional(),
  /** The promotion that wrote it: a writer recognises its own pointer when a write's answer was lost. */
  leaseId: z.string().optional(),
  promotedAt: z.string(),
  complete: z.boolean().optional(),
  /** A promotion that failed part way gave up its lease: the results stay marked incomplete, the next job goes ahead. */
  released: z.boolean().optional(),
  objects: z.array(OutputObject),
});
export type ResultsPointer = z.infer<typeof ResultsPointer>;

export function parseResultsPointer(value: unknown): ResultsPointer | undefined {
  const result = ResultsPointer.safeParse(value);
  return result.success ? result.data : undefined;
}

export interface ProvenanceRecord {
  apiVersion: typeof API_VERSION;
  agentVersion: string;
  launchId?: string;
  /** The spec with presigned URLs and env values redacted. */
  spec: unknown;
  image?: { reference: string; digest?: string };
  inputs: Array<{
    name: string;
    url: string;
    bytes: number;
    sha256?: string;
    etag?: string;
    files: string[];
    /** The files the command got (all of them when the whole input was selected), each with its own hash. */
    selected?: Array<{ path: string; sha256: string; bytes: number }>;
    /** What the container saw: only the selected files, or the whole input. */
    mount?: "selected" | "all";
  }>;
  /** The command as run, placeholders expanded (paths only; env values never appear here). */
  command?: string[];
  outputs: OutputObject[];
  /** Symbolic links in the outputs that lead outside them (or nowhere): not followed, not uploaded. */
  skippedLinks?: Array<{ path: string; target: string }>;
  partialOutputs: boolean;
  exitCode?: number;
  timings: Partial<Record<Phase, number>>;
  instance: { type?: string; id?: string; region?: string; host: string };
  startedAt: string;
  finishedAt: string;
  outcome: "succeeded" | "failed";
  reason?: FailureReason;
}

/**
 * Does a marker or status belong to the launch we wait for? A record without a launchId, or with another one, was
 * left by an earlier launch under the same job id. `instanceId`, when both sides know it, must match too.
 */
export function belongsToLaunch(
  record: { launchId?: string; instanceId?: string },
  expected: { launchId: string; instanceId?: string },
): boolean {
  if (record.launchId !== expected.launchId) return false;
  if (expected.instanceId && record.instanceId && record.instanceId !== expected.instanceId) return false;
  return true;
}

/** Who writes a record: the job, the launch and (when known) the instance. */
export type RecordIdentity = Pick<AgentStatus, "jobId" | "launchId" | "instanceId">;

/**
 * The first status of a launch, at ISO time `at`: the agent's, or the user-data's (`booting`) while the instance
 * boots and the agent is not running yet.
 */
export function startingStatus(identity: RecordIdentity, at: string, extra: Pick<AgentStatus, "booting" | "message"> = {}): AgentStatus {
  return {
    ...identity,
    ...(extra.booting ? { booting: true } : {}),
    phase: "starting",
    updatedAt: at,
    startedAt: at,
    phases: {},
    ...(extra.message !== undefined ? { message: extra.message } : {}),
  };
}

/** What every completion marker says besides its outcome. */
export type MarkerFields = RecordIdentity &
  Pick<CompletionMarker, "subject" | "message" | "exitCode" | "startedAt" | "finishedAt"> &
  Partial<Pick<CompletionMarker, "outputs" | "timings">>;

/** Nothing uploaded: a job that failed before its outputs phase. */
const NO_OUTPUTS = (prefix = ""): CompletionMarker["outputs"] => ({ prefix, count: 0, bytes: 0, partial: false });

function completionMarker(
  fields: MarkerFields,
  outcome: CompletionMarker["outcome"],
  failure?: Pick<CompletionMarker, "phase" | "reason">,
): CompletionMarker {
  return {
    apiVersion: API_VERSION,
    jobId: fields.jobId,
    launchId: fields.launchId,
    instanceId: fields.instanceId,
    subject: fields.subject,
    outcome,
    phase: failure?.phase,
    reason: failure?.reason,
    message: fields.message,
    exitCode: fields.exitCode,
    startedAt: fields.startedAt,
    finishedAt: fields.finishedAt,
    outputs: fields.outputs ?? NO_OUTPUTS(),
    timings: fields.timings ?? {},
  };
}

export function successMarker(fields: MarkerFields & Pick<CompletionMarker, "outputs" | "timings">): CompletionMarker {
  return completionMarker(fields, "succeeded");
}

/**
 * A failure marker: the agent's, the agent's when it cannot read its spec, and the user-data's (bootstrap failed,
 * agent crashed). Without `outputs` it says nothing was uploaded (to `resultsPrefix`, when given).
 */
export function failureMarker(
  fields: MarkerFields & Required<Pick<CompletionMarker, "reason">> & Pick<CompletionMarker, "phase"> & { resultsPrefix?: string },
): CompletionMarker {
  const { phase, reason, resultsPrefix, ...rest } = fields;
  return completionMarker({ ...rest, outputs: rest.outputs ?? NO_OUTPUTS(resultsPrefix) }, "failed", { phase, reason });
}

/** The provenance record: what ran, on what, with which inputs and outputs. */
export function provenanceRecord(fields: Omit<ProvenanceRecord, "apiVersion">): ProvenanceRecord {
  return { apiVersion: API_VERSION, ...fields };
}
