/**
 * A Comparison (job/comparison.ts) for people and programs: the terminal table, comparison.csv (RFC 4180) and the
 * files under $CLOUDCOMPUTE_HOME/comparisons/<comparisonId>/ (comparison.json, comparison.csv, chart.svg).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Comparison } from "../job/comparison";
import type { Price } from "../job/pricing";
import { cloudcomputeHome } from "../common/paths";
import { comparisonChartSvg } from "./comparison-chart";
import { formatDuration } from "./progress";
import { formatCost, formatPrice, formatRate, printable, table } from "./summary";
import { DEFAULT_CONCURRENCY } from "./worker-env";

type Row = Comparison["types"][number];

export function comparisonDir(comparisonId: string): string {
  return path.join(cloudcomputeHome(), "comparisons", comparisonId);
}

/** Short times to the tenth of a second (a local job's phases last moments), longer ones as 3m05s. */
function timeText(seconds: number | undefined): string {
  if (seconds === undefined) return "";
  return seconds < 60 ? `${Number(seconds.toFixed(1))}s` : formatDuration(seconds);
}

/** Phase names across every type, in the order they first appear. */
function phaseNames(types: readonly Row[], side: "driver" | "agent"): string[] {
  return [...new Set(types.flatMap((t) => Object.keys(t.phases[side])))];
}

export function comparisonTable(c: Comparison, options: { concurrencyGiven: boolean }): string {
  const agentPhases = phaseNames(c.types, "agent");
  const many = c.subjects > 1;
  const headers = [
    "TYPE", "OUTCOME", "WALL", "UP", ...agentPhases.map((p) => p.toUpperCase()), "DESTROY", "BILLED", "ON-DEMAND", "SPOT", "PER SUBJECT",
    ...(many ? [`${c.subjects} SUBJECTS`, "BATCH WALL"] : []),
  ];
  const rows = c.types.map((t) => [
    t.instanceType,
    t.outcome + (t.reason ? ` (${printable(t.reason).slice(0, 40)})` : ""),
    timeText(t.wallSeconds),
    timeText(t.phases.driver.up),
    ...agentPhases.map((p) => timeText(t.phases.agent[p])),
    timeText(t.phases.driver.destroy),
    t.billedSeconds === undefined ? "" : `${t.billedSeconds}s`,
    t.onDemandUsd === undefined ? "" : formatCost(t.onDemandUsd),
    t.spotUsd === undefined ? "" : formatCost(t.spotUsd),
    t.costPerSubjectUsd === undefined ? "unknown" : formatCost(t.costPerSubjectUsd),
    ...(many ? [t.batch ? formatCost(t.batch.costUsd) : "", t.batch ? formatDuration(t.batch.wallSeconds) : ""] : []),
  ]);
  // Local prices are only ever given; on aws a missing one could not be looked up.
  const priceText = (kind: string, p: Price | undefined) => (p ? `${kind} ${formatRate(p.usdPerHour)} (${formatPrice(p)})` : `${kind} ${c.platform === "local" ? "not given" : "unknown"}`);
  const notes = [
    `comparison ${c.comparisonId}: subject ${c.subject}, image ${c.image}, ${c.platform} ${c.region}`,
    "PER SUBJECT is the cost as run (spot when the job ran on spot): billed seconds at the type's price (looked-up prices add the root volume)",
    ...c.types.map((t) => `  ${t.instanceType}: ${priceText("on-demand", t.onDemandPrice)}; ${priceText("spot", t.spotPrice)}`),
    many
      ? `${c.subjects} SUBJECTS = ${c.subjects} × PER SUBJECT; BATCH WALL = ceil(${c.subjects} / ${c.concurrency}) × WALL, ${c.concurrency} at a time (${options.concurrencyGiven ? "--concurrency" : `the default --concurrency, ${DEFAULT_CONCURRENCY}`}); succeeded types only`
      : "for a batch's cost and wall time, add --subjects N (and --concurrency C)",
  ];
  return table(headers, rows) + notes.join("\n") + "\n";
}

/** One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break; quotes doubled. */
export function csvField(value: string | number | undefined): string {
  if (value === undefined) return "";
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** CRLF-separated records with a header row; numbers unformatted (seconds, USD), one row per type. */
export function comparisonCsv(c: Comparison): string {
  const driverSteps = phaseNames(c.types, "driver");
  const agentPhases = phaseNames(c.types, "agent");
  const columns: Array<[string, (t: Row) => string | number | undefined]> = [
    ["instanceType", (t) => t.instanceType],
    ["jobId", (t) => t.jobId],
    ["outcome", (t) => t.outcome],
    ["reason", (t) => t.reason],
    ["wallSeconds", (t) => t.wallSeconds],
    ...driverSteps.map((step): [string, (t: Row) => number | undefined] => [`driver_${step}_seconds`, (t) => t.phases.driver[step]]),
    ...agentPhases.map((phase): [string, (t: Row) => number | undefined] => [`agent_${phase}_seconds`, (t) => t.phases.agent[phase]]),
    ["instanceSeconds", (t) => t.instanceSeconds],
    ["billedSeconds", (t) => t.billedSeconds],
    ["onDemandUsdPerHour", (t) => t.onDemandPrice?.usdPerHour],
    ["onDemandPriceSource", (t) => t.onDemandPrice?.source],
    ["onDemandPriceAsOf", (t) => t.onDemandPrice?.asOf],
    ["spotUsdPerHour", (t) => t.spotPrice?.usdPerHour],
    ["spotPriceSource", (t) => t.spotPrice?.source],
    ["spotPriceAsOf", (t) => t.spotPrice?.asOf],
    ["onDemandUsd", (t) => t.onDemandUsd],
    ["spotUsd", (t) => t.spotUsd],
    ["costPerSubjectUsd", (t) => t.costPerSubjectUsd],
    ["subjects", () => c.subjects],
    ["concurrency", () => c.concurrency],
    ["batchCostUsd", (t) => t.batch?.costUsd],
    ["batchWallSeconds", (t) => t.batch?.wallSeconds],
  ];
  const lines = [columns.map(([name]) => csvField(name)), ...c.types.map((t) => columns.map(([, value]) => csvField(value(t))))];
  return lines.map((fields) => fields.join(",")).join("\r\n") + "\r\n";
}

/** Save the three files (each written whole, then renamed into place); their paths. */
export function writeComparisonFiles(c: Comparison): { dir: string; json: string; csv: string; svg: string } {
  const dir = comparisonDir(c.comparisonId);
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
    return file;
  };
  return {
    dir,
    json: write("comparison.json", JSON.stringify(c, null, 2) + "\n"),
    csv: write("comparison.csv", comparisonCsv(c)),
    svg: write("chart.svg", comparisonChartSvg(c)),
  };
}
