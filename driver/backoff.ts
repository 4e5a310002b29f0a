/**
 * Backing off instead of failing when AWS says "later": EC2's RequestLimitExceeded, IAM's Throttling, and
 * InsufficientInstanceCapacity (the zone has no such instance free right now). The driver's own SDK clients retry
 * these themselves (awsRetryConfig); an engine `up` or `destroy` that fails with one is run again here, with
 * exponential backoff and full jitter, bounded in attempts and in total time — and it says so in the job's log.
 */
import { errorMessage } from "../common/errors";
import { withRetries } from "../common/retry";

/** The SDK's adaptive mode retries throttling errors (RequestLimitExceeded, Throttling, ...) with backoff and slows its sends. */
export const awsRetryConfig = { maxAttempts: 8, retryMode: "adaptive" } as const;

export type BackoffKind = "throttled" | "capacity";

const THROTTLE_CODES = new Set(["RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException", "EC2ThrottledException"]);
const CAPACITY_CODES = new Set(["InsufficientInstanceCapacity"]);

function classifyCode(code: unknown): BackoffKind | undefined {
  if (typeof code !== "string") return undefined;
  if (CAPACITY_CODES.has(code)) return "capacity";
  return THROTTLE_CODES.has(code) ? "throttled" : undefined;
}

/**
 * What the engine's output says, as the AWS provider words it: `api error InsufficientInstanceCapacity: We currently
 * do not have sufficient ...`, `api error RequestLimitExceeded: Request limit exceeded.`, `api error Throttling: Rate
 * exceeded`. Capacity wins over throttling: it is the one that needs the longer wait.
 */
export function classifyEngineText(text: string): BackoffKind | undefined {
  if (/\bInsufficientInstanceCapacity\b/.test(text)) return "capacity";
  if (/\bRequestLimitExceeded\b/.test(text)) return "throttled";
  if (/\b(?:api error|Code:?|error code:?)\s*(?:Throttling|ThrottlingException|TooManyRequestsException)\b/i.test(text)) return "throttled";
  if (/\b(?:Throttling|ThrottlingException): Rate exceeded/.test(text)) return "throttled";
  return undefined;
}

/** An SDK error (its name or Code) or an engine failure (its message, which holds the provider's diagnostics). */
export function classifyAwsFailure(err: unknown): BackoffKind | undefined {
  if (!err || typeof err !== "object") return undefined;
  const e = err as { name?: unknown; Code?: unknown; code?: unknown };
  return classifyCode(e.name) ?? classifyCode(e.Code) ?? classifyCode(e.code) ?? classifyEngineText(errorMessage(err));
}

export interface BackoffPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry starts later than this after the first attempt. */
  maxTotalMs: number;
}

/** For `up`: capacity comes back in minutes, so the waits grow to minutes; at most ~20 min in all. */
export const ENGINE_BACKOFF: BackoffPolicy = {
  attempts: Number(process.env.CLOUDCOMPUTE_BACKOFF_ATTEMPTS ?? 6),
  baseDelayMs: Number(process.env.CLOUDCOMPUTE_BACKOFF_BASE_MS ?? 20_000),
  maxDelayMs: 5 * 60_000,
  maxTotalMs: 20 * 60_000,
};

export interface BackoffOptions {
  policy?: BackoffPolicy;
  /** Which kinds to retry (destroy retries throttling only: capacity never stops a delete). */
  kinds?: readonly BackoffKind[];
  signal?: AbortSignal;
  log: (line: string) => void;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

const KIND_TEXT: Record<BackoffKind, string> = {
  throttled: "AWS is throttling requests (RequestLimitExceeded/Throttling)",
  capacity: "EC2 has no capacity for the instance type right now (InsufficientInstanceCapacity)",
};

/** Run `fn` (an engine operation), again after a backoff while it fails for throttling or capacity. */
export function withAwsBackoff<T>(what: string, fn: (attempt: number) => Promise<T>, options: BackoffOptions): Promise<T> {
  const policy = options.policy ?? ENGINE_BACKOFF;
  const kinds = options.kinds ?? ["throttled", "capacity"];
  return withRetries(fn, {
    attempts: policy.attempts,
    baseDelayMs: policy.baseDelayMs,
    maxDelayMs: policy.maxDelayMs,
    maxTotalMs: policy.maxTotalMs,
    signal: options.signal,
    now: options.now,
    sleep: options.sleep,
    random: options.random,
    isRetryable: (err) => {
      const kind = classifyAwsFailure(err);
      return kind !== undefined && kinds.includes(kind);
    },
    onRetry: (err, attempt, delayMs) => {
      options.log(
        `${what}: ${KIND_TEXT[classifyAwsFailure(err)!]}; attempt ${attempt} of at most ${policy.attempts} failed, ` +
          `trying again in ${Math.round(delayMs / 1000)} s (backoff with jitter, at most ${Math.round(policy.maxTotalMs / 60_000)} min in all)`,
      );
    },
  });
}
