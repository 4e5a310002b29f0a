/** Retries with exponential backoff and jitter for transient failures: throttling, 5xx, connection resets. */
import { setTimeout as sleep } from "node:timers/promises";

const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);
const TRANSIENT_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "InternalError",
  "ServiceUnavailable",
  "TimeoutError",
  "RequestLimitExceeded",
]);

/** An HTTP status carried by an SDK error ($metadata) or by our own errors (`status`). */
export function httpStatusOf(err: unknown): number | undefined {
  const e = err as { $metadata?: { httpStatusCode?: number }; status?: number; statusCode?: number } | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.status ?? e?.statusCode;
}

export function isTransientError(err: unknown): boolean {
  if (!err || typeof err !== "object") return false;
  const e = err as { name?: string; code?: string; cause?: unknown; $retryable?: unknown };
  if (e.name === "AbortError") return false;
  const status = httpStatusOf(err);
  if (status !== undefined && (status === 429 || status >= 500)) return true;
  if (e.$retryable) return true;
  if ((e.code && TRANSIENT_CODES.has(e.code)) || (e.name && TRANSIENT_NAMES.has(e.name))) return true;
  if (/socket hang up|ECONNRESET|terminated|other side closed/i.test(String((err as Error).message))) return true;
  return e.cause !== undefined && e.cause !== err && isTransientError(e.cause);
}

export interface RetryOptions {
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  signal?: AbortSignal;
  isRetryable?: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** No retry whose delay would end later than this after the first attempt started. */
  maxTotalMs?: number;
  /** For tests: a clock, a sleep and a random source instead of the real ones. */
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

export async function withRetries<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 5;
  const base = opts.baseDelayMs ?? 250;
  const max = opts.maxDelayMs ?? 8000;
  const retryable = opts.isRetryable ?? isTransientError;
  const now = opts.now ?? Date.now;
  const random = opts.random ?? Math.random;
  const pause = opts.sleep ?? ((ms: number, signal?: AbortSignal) => sleep(ms, undefined, { signal }));
  const started = now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !retryable(err) || opts.signal?.aborted) throw err;
      // Full jitter keeps parallel workers from retrying in lockstep against a throttling server.
      const delay = Math.round(random() * Math.min(max, base * 2 ** (attempt - 1)));
      if (opts.maxTotalMs !== undefined && now() + delay - started > opts.maxTotalMs) throw err;
      opts.onRetry?.(err, attempt, delay);
      await pause(delay, opts.signal);
    }
  }
}

/**
 * Run `fn` over `items` with at most `limit` at once. On the first failure no new item starts; the ones running
 * finish, then the first error is thrown. `done` receives each result as it completes (for partial manifests).
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  done?: (result: R, item: T) => void,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index], index);
        done?.(results[index], items[index]);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.error;
  return results;
}
