/** Human-readable summaries of job results and job lists (stderr), beside the JSON forms (stdout). */
import { formatBytes, formatDuration } from "./progress";
import type { JobRecord } from "./jobindex";
import type { JobResult } from "./run";
import type { Price, SpotAccount } from "../job/pricing";

export function formatCost(usd: number | undefined): string {
  if (usd === undefined) return "unknown";
  return usd < 0.01 && usd > 0 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/**
 * Text from the job (container output reaches marker messages and the log) made safe for a terminal: control
 * characters other than line breaks and tabs are shown as `?`, so output cannot move the cursor, repaint a failed
 * job's summary as a success or set the terminal's title or clipboard.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "?");
}

/** A price per hour to its tenth of a cent and beyond: "$0.768/h", not "$0.77/h". */
export function formatRate(usdPerHour: number): string {
  return `$${Number(usdPerHour.toFixed(5))}/h`;
}

/** Where a price came from and when: "pricing-api, 2026-11-29". */
export function formatPrice(price: Pick<Price, "source" | "asOf" | "note">): string {
  return `${price.source}, ${price.asOf.slice(0, 10)}${price.note ? `; ${price.note}` : ""}`;
}

export function jobSummary(result: JobResult & { price?: Price }): string {
  const lines = [
    `job ${result.jobId} (${result.subject}, ${result.platform}): ${result.outcome.toUpperCase()}${result.reason ? ` [${result.reason}]` : ""}`,
  ];
  if (result.outcome !== "succeeded") lines.push(`  ${printable(result.message).split("\n").join("\n  ")}`);
  if (result.outcome === "succeeded") {
    lines.push(`  results:  ${result.resultsUrl}${result.outputs ? ` (${result.outputs.count} objects, ${formatBytes(result.outputs.bytes)})` : ""}`);
  } else {
    // The subject's results folder holds an earlier run's results (or none): never present them as this job's.
    const kept = result.outputs && result.outputs.count > 0 ? `; its ${result.outputs.count} partial output(s) are in the job's area` : "";
    lines.push(result.resultsUrl ? `  results:  none from this job (${result.resultsUrl} is not its output${kept})` : "  results:  none from this job");
  }
  // A job that never started has no log, and the driver no steps: no empty lines for them.
  if (result.logUrl) lines.push(`  log:      ${result.logUrl}`);
  if (result.provenanceUrl) lines.push(`  provenance: ${result.provenanceUrl} (image digest, input and output checksums)`);
  const agent = Object.entries(result.timings.agent).filter(([, v]) => v !== undefined);
  if (agent.length > 0) lines.push(`  phases:   ${agent.map(([phase, s]) => `${phase} ${formatDuration(s ?? 0)}`).join(", ")}`);
  const d = result.timings.driver;
  const steps = ["create", "up", "wait", "destroy", "total"].filter((k) => d[k] !== undefined);
  if (steps.length > 0) lines.push(`  driver:   ${steps.map((k) => `${k} ${d[k]}s`).join(", ")}`);
  if (result.instanceSeconds !== undefined) {
    const price = result.price ? ` at ${formatRate(result.price.usdPerHour)} (${formatPrice(result.price)})` : "";
    const all = result.attempts.length > 1 ? ` (all ${result.attempts.length} attempts)` : "";
    lines.push(`  instance: ${result.instanceSeconds}s (billed ${result.billedSeconds}s)${price}, estimated cost ${result.costIncomplete ? "at least " : ""}${formatCost(result.costUsd)}${all}${result.costIncomplete ? " (an attempt's cost is unknown)" : ""}`);
  }
  if (result.spot) lines.push(`  ${spotLine(result.spot)}`);
  if (result.attempts.length > 1) {
    const costOf = new Map((result.attemptCosts ?? []).map((a) => [a.jobId, a]));
    const described = result.attempts.map((id) => {
      const a = costOf.get(id);
      return a ? `${id} (${[a.spot ? "spot" : "on-demand", a.costUsd === undefined ? undefined : formatCost(a.costUsd), a.reason].filter(Boolean).join(", ")})` : id;
    });
    lines.push(`  attempts: ${described.join(", ")}`);
  }
  return lines.join("\n") + "\n";
}

/** A net saving against on demand, said as such: "$0.07 saved", "$0.01 lost". */
export function formatNetSaving(usd: number): string {
  return usd >= 0 ? `${formatCost(usd)} saved` : `${formatCost(-usd)} lost`;
}

/** What spot saved and what lost attempts cost, in a line: the bill's other half for spot and retried jobs. */
export function spotLine(spot: SpotAccount): string {
  const parts = [spot.savedUsd !== undefined ? `spot saved ${formatCost(spot.savedUsd)} against on-demand prices` : "no spot saving to claim (no spot run finished at a known spot price)"];
  if (spot.lostAttempts > 0) parts.push(`${spot.lostAttempts} lost attempt${spot.lostAttempts === 1 ? "" : "s"} cost ${formatCost(spot.interruptionsUsd)} (included in the cost)`);
  if (spot.netSavedUsd !== undefined) parts.push(spot.netSavedUsd >= 0 ? `net ${formatCost(spot.netSavedUsd)} below one on-demand run` : `net ${formatCost(-spot.netSavedUsd)} above one on-demand run`);
  return parts.join("; ");
}

/** A fixed-width text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? "").padEnd(widths[i])).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n") + "\n";
}

export function jobListTable(records: JobRecord[]): string {
  return table(
    ["JOB", "SUBJECT", "PLATFORM", "STATE", "REASON", "STARTED", "ENDED", "COST"],
    records.map((r) => [r.jobId, r.subject, r.platform, r.state, r.reason ?? "", r.createdAt.replace(/\.\d+Z$/, "Z"), r.endedAt?.replace(/\.\d+Z$/, "Z") ?? "", r.costUsd === undefined ? "" : formatCost(r.costUsd)]),
  );
}
