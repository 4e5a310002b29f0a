/** A batch's totals over its entries: what the report's header and the batch-end event say. */
import type { BatchEntry } from "./batch";

export interface BatchTotals {
  /** Entries per outcome (skipped and held included). */
  counts: Record<string, number>;
  /** USD, rounded to a hundredth of a cent: sums of prices carry float noise. */
  costUsd: number;
  billedSeconds: number;
  /** Present only when some entry carries it. */
  spotSavedUsd?: number;
  interruptionCostUsd?: number;
}

const toHundredthCent = (usd: number) => Math.round(usd * 10000) / 10000;

export function batchTotals(entries: readonly BatchEntry[]): BatchTotals {
  const counts: Record<string, number> = {};
  let costUsd = 0;
  let billedSeconds = 0;
  let spotSavedUsd: number | undefined;
  let interruptionCostUsd: number | undefined;
  for (const e of entries) {
    counts[e.outcome] = (counts[e.outcome] ?? 0) + 1;
    costUsd += e.costUsd ?? 0;
    billedSeconds += e.billedSeconds ?? 0;
    if (e.spotSavedUsd !== undefined) spotSavedUsd = (spotSavedUsd ?? 0) + e.spotSavedUsd;
    if (e.interruptionCostUsd !== undefined) interruptionCostUsd = (interruptionCostUsd ?? 0) + e.interruptionCostUsd;
  }
  return {
    counts,
    costUsd: toHundredthCent(costUsd),
    billedSeconds: Math.round(billedSeconds * 1000) / 1000, // local jobs bill fractions of seconds
    ...(spotSavedUsd !== undefined ? { spotSavedUsd: toHundredthCent(spotSavedUsd) } : {}),
    ...(interruptionCostUsd !== undefined ? { interruptionCostUsd: toHundredthCent(interruptionCostUsd) } : {}),
  };
}
