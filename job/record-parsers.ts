/**
 * The readers of the agent's status and completion marker, without zod: `status` parses two small records, and loading
 * zod would cost it more than the reads. They accept and return exactly what the zod schemas in records.ts do for any
 * JSON value (unknown keys dropped, keys in the same order); test/record-parsers.test.ts holds them to that.
 */
import { API_VERSION } from "./api-version";
import type { AgentStatus, CompletionMarker } from "./records";

export const PHASES = ["starting", "inputs", "pull", "run", "outputs", "finishing", "done"] as const;

/** Why a job failed. Each has one meaning; the driver and users match on it. */
export const FAILURE_REASONS = [
  "missing-input",
  "presigned-url-expired",
  "input-integrity",
  "corrupt-archive",
  "no-matching-file",
  "multiple-matching-files",
  "image-pull-failed",
  "container-failed",
  "out-of-disk",
  "max-runtime",
  "output-upload-failed",
  "bootstrap-failed",
  "spot-interrupted",
  "internal-error",
] as const;

/** A field's check: the parsed value, or INVALID. */
type Check = (value: unknown) => unknown;
const INVALID = Symbol("invalid");

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

const str: Check = (v) => (typeof v === "string" ? v : INVALID);
const bool: Check = (v) => (typeof v === "boolean" ? v : INVALID);
// zod 4's number() refuses NaN and ±Infinity; int() means a safe integer.
const num: Check = (v) => (typeof v === "number" && Number.isFinite(v) ? v : INVALID);
const nonNegative: Check = (v) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : INVALID);
const int: Check = (v) => (Number.isSafeInteger(v) ? v : INVALID);
const nonNegativeInt: Check = (v) => (Number.isSafeInteger(v) && (v as number) >= 0 ? v : INVALID);
const oneOf =
  (values: readonly unknown[]): Check =>
  (v) => (values.includes(v) ? v : INVALID);

/** A field that may be absent: absent stays absent (a present key is kept even when undefined, as zod does). */
interface Optional {
  optional: Check;
}
type Field = Check | Optional;
const optional = (check: Check): Optional => ({ optional: check });

/** z.object(shape): every field checked in the shape's order, unknown keys dropped. */
function object(shape: Record<string, Field>): Check {
  const fields = Object.entries(shape);
  return (input) => {
    if (!isObject(input)) return INVALID;
    const out: Json = {};
    for (const [key, field] of fields) {
      const present = key in input;
      if (typeof field !== "function") {
        if (!present) continue;
        const value = input[key];
        if (value === undefined) out[key] = undefined;
        else if ((out[key] = field.optional(value)) === INVALID) return INVALID;
      } else if (!present || (out[key] = field(input[key])) === INVALID) return INVALID;
    }
    return out;
  };
}

/** z.partialRecord(z.enum(keys), value): every own key must be one of `keys` (a "__proto__" key is skipped). */
function partialRecord(keys: readonly string[], value: Check): Check {
  return (input) => {
    if (!isObject(input)) return INVALID;
    const out: Json = {};
    for (const key of Object.keys(input)) {
      if (key === "__proto__") continue;
      if (!keys.includes(key) || (out[key] = value(input[key])) === INVALID) return INVALID;
    }
    return out;
  };
}

const phase = oneOf(PHASES);

const phaseProgress = object({
  bytesDone: nonNegative,
  bytesTotal: optional(nonNegative),
  startedAt: optional(str),
  endedAt: optional(str),
});

const agentStatus = object({
  jobId: str,
  launchId: optional(str),
  instanceId: optional(str),
  phase,
  updatedAt: str,
  startedAt: str,
  phases: partialRecord(PHASES, phaseProgress),
  message: optional(str),
  booting: optional(bool),
});

const completionMarker = object({
  apiVersion: oneOf([API_VERSION]),
  jobId: str,
  launchId: optional(str),
  instanceId: optional(str),
  subject: str,
  outcome: oneOf(["succeeded", "failed"]),
  phase: optional(oneOf([...PHASES, "bootstrap"])),
  reason: optional(oneOf(FAILURE_REASONS)),
  message: str,
  exitCode: optional(int),
  startedAt: optional(str),
  finishedAt: str,
  outputs: object({ prefix: str, count: nonNegativeInt, bytes: nonNegative, partial: bool }),
  timings: partialRecord(PHASES, num),
});

/** A marker read from S3, or undefined when it is not a valid marker (a reader must not act on a forged shape). */
export function parseCompletionMarker(value: unknown): CompletionMarker | undefined {
  const parsed = completionMarker(value);
  return parsed === INVALID ? undefined : (parsed as CompletionMarker);
}

export function parseAgentStatus(value: unknown): AgentStatus | undefined {
  const parsed = agentStatus(value);
  return parsed === INVALID ? undefined : (parsed as AgentStatus);
}
