/** A batch's totals over its entries: what the report's header and the batch-end event say. */
import type { BatchEntry } from "./batch";

export interface BatchTotals {
  /** Entries per outcome (skipped and held included). */
  counts: Record<string, number>;
  /** USD, rounded to a hundredth of a cent: sums of prices carry float noise. */
  costUsd: number;
  billedSeconds: number;
  /** Subjects that ran whose cost is unknown or only partly known: costUsd is then a lower bound. */
  unknownCostSubjects: number;
  /** Present only when some entry carries it. */
  spotSavedUsd?: number;
  interruptionCostUsd?: number;
  spotNetSavedUsd?: number;
}

const toHundredthCent = (usd: number) => Math.round(usd * 10000) / 10000;

export function batchTotals(entries: readonly BatchEntry[]): BatchTotals {
  const counts: Record<string, number> = {};
  let costUsd = 0;
  let billedSeconds = 0;
  let spotSavedUsd: number | undefined;
  let interruptionCostUsd: number | undefined;
  let spotNetSavedUsd: number | undefined;
  let unknownCostSubjects = 0;
  for (const e of entries) {
    const ran = e.jobId !== undefined && e.outcome !== "skipped" && e.outcome !== "held";
    if (ran && (e.costUsd === undefined || e.costIncomplete)) unknownCostSubjects++;
    if (e.spotNetSavedUsd !== undefined) spotNetSavedUsd = (spotNetSavedUsd ?? 0) + e.spotNetSavedUsd;
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
    unknownCostSubjects,
    ...(spotSavedUsd !== undefined ? { spotSavedUsd: toHundredthCent(spotSavedUsd) } : {}),
    ...(interruptionCostUsd !== undefined ? { interruptionCostUsd: toHundredthCent(interruptionCostUsd) } : {}),
    ...(spotNetSavedUsd !== undefined ? { spotNetSavedUsd: toHundredthCent(spotNetSavedUsd) } : {}),
  };
}
