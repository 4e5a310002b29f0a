/**
 * What the agent writes to the job's private area and the driver reads: status (a heartbeat with progress),
 * the completion marker (written last) and the provenance record. Shared types so both sides agree.
 */

export type Phase = "starting" | "inputs" | "pull" | "run" | "outputs" | "finishing" | "done";

export interface PhaseProgress {
  bytesDone: number;
  bytesTotal?: number;
  startedAt?: string;
  endedAt?: string;
}

export interface AgentStatus {
  jobId: string;
  phase: Phase;
  /** ISO time of this update; the driver treats an old one as a stale heartbeat. */
  updatedAt: string;
  startedAt: string;
  phases: Partial<Record<Phase, PhaseProgress>>;
  message?: string;
}

/** Why a job failed. Each has one meaning; the driver and users match on it. */
export type FailureReason =
  | "missing-input"
  | "presigned-url-expired"
  | "input-integrity"
  | "corrupt-archive"
  | "no-matching-file"
  | "multiple-matching-files"
  | "image-pull-failed"
  | "container-failed"
  | "out-of-disk"
  | "max-runtime"
  | "output-upload-failed"
  | "bootstrap-failed"
  | "spot-interrupted"
  | "internal-error";

export interface OutputObject {
  key: string;
  size: number;
  sha256: string;
}

export interface CompletionMarker {
  apiVersion: "cloudcompute/v1";
  jobId: string;
  subject: string;
  outcome: "succeeded" | "failed";
  /** The phase that failed, for failures. */
  phase?: Phase | "bootstrap";
  reason?: FailureReason;
  /** Human-readable detail, e.g. "presigned URL expired at 2026-11-25T10:00:00Z". */
  message: string;
  exitCode?: number;
  startedAt?: string;
  finishedAt: string;
  /** Where results went, how many objects and bytes. */
  outputs: { prefix: string; count: number; bytes: number; partial: boolean };
  /** Seconds spent per phase. */
  timings: Partial<Record<Phase, number>>;
}

export interface ProvenanceRecord {
  apiVersion: "cloudcompute/v1";
  agentVersion: string;
  /** The spec with presigned URLs redacted. */
  spec: unknown;
  image?: { reference: string; digest?: string };
  inputs: Array<{ name: string; url: string; bytes: number; sha256?: string; etag?: string; files: string[] }>;
  outputs: OutputObject[];
  partialOutputs: boolean;
  exitCode?: number;
  timings: Partial<Record<Phase, number>>;
  instance: { type?: string; id?: string; region?: string; host: string };
  startedAt: string;
  finishedAt: string;
  outcome: "succeeded" | "failed";
  reason?: FailureReason;
}
