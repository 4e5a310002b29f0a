/**
 * A Comparison (job/comparison.ts) for people and programs: the terminal table, comparison.csv (RFC 4180) and the
 * files under $CLOUDCOMPUTE_HOME/comparisons/<comparisonId>/ (comparison.json, comparison.csv, chart.svg).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Comparison } from "../job/comparison";
import type { Price } from "../job/pricing";
import { cloudcomputeHome } from "../common/paths";
import { errorMessage } from "../common/errors";
import { comparisonChartSvg, shortened } from "./comparison-chart";
import { formatDuration } from "./progress";
import { formatCost, formatPrice, formatRate, printable, table } from "./summary";
import { DEFAULT_CONCURRENCY } from "./worker-env";
import { writeFileWhole } from "../common/files";

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

/** The widest the table and its notes get: a 120-column terminal shows them unwrapped. */
export const TABLE_WIDTH = 120;

/** A note cut into lines of at most `width` at spaces, continued with an indent. */
export function wrapNote(text: string, width = TABLE_WIDTH, indent = "    "): string[] {
  const lead = /^ */.exec(text)![0];
  const lines: string[] = [];
  let line = "";
  for (const word of text.slice(lead.length).split(" ")) {
    if (line === "") line = lead + word;
    else if (line.length + 1 + word.length > width) {
      lines.push(line);
      line = lead + indent + word;
    } else line = `${line} ${word}`;
  }
  return [...lines, line];
}

/**
 * The terminal table: outcome, wall, billed seconds, costs and the batch's; each phase's time only with `wide`
 * (they are always in the CSV and JSON). Reasons, prices and assumptions follow as notes.
 */
export function comparisonTable(c: Comparison, options: { concurrencyGiven: boolean; wide?: boolean }): string {
  const agentPhases = options.wide ? phaseNames(c.types, "agent") : [];
  const phaseHeaders = options.wide ? ["UP", ...agentPhases.map((p) => printable(p).toUpperCase()), "DESTROY"] : [];
  const many = c.subjects > 1;
  const headers = ["TYPE", "OUTCOME", "WALL", ...phaseHeaders, "BILLED", "ON-DEMAND", "SPOT", "PER SUBJECT", ...(many ? [`${c.subjects} SUBJECTS`, "BATCH WALL"] : [])];
  const rows = c.types.map((t) => [
    t.instanceType,
    printable(t.outcome),
    timeText(t.wallSeconds),
    ...(options.wide ? [timeText(t.phases.driver.up), ...agentPhases.map((p) => timeText(t.phases.agent[p])), timeText(t.phases.driver.destroy)] : []),
    t.billedSeconds === undefined ? "" : `${t.billedSeconds}s`,
    t.onDemandUsd === undefined ? "" : formatCost(t.onDemandUsd),
    t.spotUsd === undefined ? "" : formatCost(t.spotUsd),
    t.costPerSubjectUsd === undefined ? "unknown" : formatCost(t.costPerSubjectUsd),
    ...(many ? [t.batch ? formatCost(t.batch.costUsd) : "", t.batch ? formatDuration(t.batch.wallSeconds) + (t.batch.concurrency !== undefined ? "*" : "") : ""] : []),
  ]);
  // Local prices are only ever given; on aws a missing one could not be looked up.
  const priceText = (kind: string, p: Price | undefined) => (p ? `${kind} ${formatRate(p.usdPerHour)} (${printable(formatPrice(p))})` : `${kind} ${c.platform === "local" ? "not given" : "unknown"}`);
  const concurrencyText = options.concurrencyGiven ? "--concurrency" : `the default --concurrency, ${DEFAULT_CONCURRENCY}`;
  const notes = [
    `comparison ${c.comparisonId}: subject ${printable(c.subject)}, image ${printable(shortened(c.image, 60))}, ${printable(c.platform)} ${printable(c.region)}`,
    ...c.types.filter((t) => t.reason).map((t) => `  ${t.instanceType} ${printable(t.outcome)}: ${printable(t.reason!)}`),
    `PER SUBJECT is the cost as run (${c.spot ? "on spot" : "on demand"}): billed seconds at the type's price (looked-up prices add the root volume)`,
    ...c.types.map((t) => `  ${t.instanceType}: ${priceText("on-demand", t.onDemandPrice)}; ${priceText("spot", t.spotPrice)}`),
    ...(options.wide ? [] : ["each phase's time: add --wide, or see comparison.csv"]),
    many
      ? `${c.subjects} SUBJECTS = ${c.subjects} × PER SUBJECT; BATCH WALL = ceil(${c.subjects} / ${c.concurrency}) × WALL, ${c.concurrency} at a time (${concurrencyText}${c.types.some((t) => t.batch?.capped) ? "; * fewer: the quotas cap it" : ""}); succeeded types only. Assumed:`
      : "for a batch's cost and wall time, add --subjects N (and --concurrency C). A batch's figures assume:",
    ...(c.assumptions ?? []).map((a) => `  - ${printable(a)}`),
  ];
  return table(headers, rows) + notes.flatMap((note) => wrapNote(note)).join("\n") + "\n";
}

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break; quotes doubled. Text that a
 * spreadsheet would take for a formula (= + - @, tab, CR first) gets a leading ' so it stays text.
 */
export function csvField(value: string | number | undefined): string {
  if (value === undefined) return "";
  const text = typeof value === "string" && /^[=+\-@\t\r]/.test(value) ? `'${value}` : String(value);
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

/** Save the three files (each written whole to a new file of its own, then renamed into place); their paths. */
export function writeComparisonFiles(c: Comparison): { dir: string; json: string; csv: string; svg: string } {
  const dir = comparisonDir(c.comparisonId);
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    writeFileWhole(file, text);
    return file;
  };
  return {
    dir,
    json: write("comparison.json", JSON.stringify(c, null, 2) + "\n"),
    csv: write("comparison.csv", comparisonCsv(c)),
    svg: write("chart.svg", comparisonChartSvg(c)),
  };
}

/** The files saved, or why not (a full disk, an unwritable home): the caller warns, the results are already shown. */
export function saveComparison(c: Comparison): { files: ReturnType<typeof writeComparisonFiles> } | { error: string } {
  try {
    return { files: writeComparisonFiles(c) };
  } catch (err) {
    return { error: errorMessage(err) };
  }
}
