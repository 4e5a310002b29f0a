/**
 * What a batch passes its workers through the environment (driver/batch.ts): their job flags, and the batch's id,
 * which each worker's job record carries (`list --batch`). A tiny module: the CLI reads it at every start.
 */

/** The environment variable carrying a batch worker's job flags (a JSON list of arguments). */
export const WORKER_ARGS_ENV = "CLOUDCOMPUTE_WORKER_ARGS";

/** The environment variable naming the batch a worker runs for. */
export const BATCH_ID_ENV = "CLOUDCOMPUTE_BATCH_ID";

/** The batch this process works for: only a batch worker (CLOUDCOMPUTE_WORKER=1) has one. */
export function workerBatchId(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.CLOUDCOMPUTE_WORKER === "1" && env[BATCH_ID_ENV] ? env[BATCH_ID_ENV] : undefined;
}

/** The hidden flag carrying one subject's input URLs (JSON) to its worker, through the environment like the rest. */
export const SUBJECT_INPUTS_FLAG = "subject-inputs";

/**
 * Engine workers a batch runs at once unless --engine-concurrency says otherwise: one per core (each is a Pulumi
 * engine, CPU-bound for the seconds of an up or destroy, ~450 MB at its peak).
 */
export function defaultEngineConcurrency(): number {
  return Math.max(1, (require("node:os") as typeof import("node:os")).availableParallelism());
}

/** Jobs a batch runs at once unless --concurrency says otherwise (then capped to what the account's quotas fit). */
export const DEFAULT_CONCURRENCY = 4;
