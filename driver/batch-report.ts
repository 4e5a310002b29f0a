/**
 * The batch's report page, `report.html` beside `summary.json`: header with counts and totals, one row per subject,
 * histograms of wall time and cost. Self-contained (inline CSS and SVG, no script, nothing fetched; a CSP says so
 * to the browser too) and every text from users or containers escaped: it is opened from disk and shared.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { BatchEntry, BatchResult } from "./batch";
import { batchTotals } from "./batch-totals";
import { histogramSvg } from "./batch-report-chart";
import { escapeHtml } from "./html";
import { formatDuration } from "./progress";
import { formatCost, formatNetSaving, formatPrice, formatRate, printable } from "./summary";
import { writeFileWhole } from "../common/files";

export interface ReportOptions {
  /** Subjects whose batch log file (entry.logPath) exists: linked relative to the page. */
  localLogs?: ReadonlySet<string>;
  /** Skipped subjects are listed one by one up to this many, else only counted (a study skips thousands). */
  listSkippedUpTo?: number;
}

const LIST_SKIPPED_UP_TO = 200;
/** A container's message can be kilobytes of output: the page shows its start, the log has the rest. */
const MESSAGE_CHARS = 300;

const CSS = `
body{font:14px/1.4 "DejaVu Sans",system-ui,sans-serif;color:#1b1f24;margin:24px;max-width:1160px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.when{color:#555;margin:0 0 12px}
dl.totals{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dl.totals dt{color:#555}dl.totals dd{margin:0;font-variant-numeric:tabular-nums}
ul.counts{list-style:none;padding:0;margin:8px 0 12px;display:flex;flex-wrap:wrap;gap:8px}
ul.counts li{padding:2px 10px;border-radius:10px;background:#eef1f4}
.succeeded{color:#17692f}.failed,.error{color:#a4141d}.interrupted,.held{color:#8a5a00}.skipped{color:#555}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg{background:#fafbfc;border:1px solid #dde1e6}
svg .bar{fill:#4a7fb5}svg .axis{stroke:#333;stroke-width:1}svg text{font:12px "DejaVu Sans",sans-serif;fill:#222}
svg .chart-title{font-weight:bold;font-size:13px}svg .count{font-size:11px}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border-bottom:1px solid #dde1e6;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.message{color:#555;font-size:12px;white-space:pre-wrap}
.note{color:#555}
`;

export function renderBatchReport(result: BatchResult, options: ReportOptions = {}): string {
  const totals = batchTotals(result.entries);
  const skipped = result.entries.filter((e) => e.outcome === "skipped");
  const listSkipped = skipped.length <= (options.listSkippedUpTo ?? LIST_SKIPPED_UP_TO);
  const rows = result.entries.filter((e) => listSkipped || e.outcome !== "skipped");
  const ran = result.entries.filter((e) => e.outcome !== "skipped" && e.outcome !== "held");
  const wallSeconds = result.startedAt && result.endedAt ? Math.max(0, (Date.parse(result.endedAt) - Date.parse(result.startedAt)) / 1000) : undefined;
  const dir = path.dirname(result.summaryPath);

  const total = (id: string, label: string, value: number, text: string) => `<dt>${label}</dt><dd id="${id}" data-value="${value}">${escapeHtml(text)}</dd>`;
  const header = [
    `<h1>Batch <span id="batch-id">${escapeHtml(result.batchId)}</span></h1>`,
    result.startedAt ? `<p class="when">${escapeHtml(result.startedAt)} to ${escapeHtml(result.endedAt ?? "?")} (UTC), exit code <span id="exit-code">${result.exitCode}</span></p>` : `<p class="when">exit code <span id="exit-code">${result.exitCode}</span></p>`,
    `<ul class="counts" id="counts">${Object.entries(totals.counts).map(([outcome, n]) => `<li class="${cssClass(outcome)}" data-outcome="${escapeHtml(outcome)}" data-count="${n}">${n} ${escapeHtml(outcome)}</li>`).join("")}</ul>`,
    `<dl class="totals">`,
    total("subject-count", "subjects", result.entries.length, String(result.entries.length)),
    total("total-cost", "cost (estimated)", totals.costUsd, totals.unknownCostSubjects > 0 ? `at least ${formatCost(totals.costUsd)} (${totals.unknownCostSubjects} subject(s)' cost unknown)` : formatCost(totals.costUsd)),
    pricesUsed(result.entries),
    total("total-billed-seconds", "billed instance time", totals.billedSeconds, `${Number(totals.billedSeconds.toFixed(1))} s (${(totals.billedSeconds / 3600).toFixed(2)} h)`),
    wallSeconds !== undefined ? total("batch-wall-seconds", "batch wall time", Math.round(wallSeconds), formatDuration(wallSeconds)) : "",
    totals.spotSavedUsd !== undefined ? total("spot-saved", "saved by spot", totals.spotSavedUsd, formatCost(totals.spotSavedUsd)) : "",
    totals.interruptionCostUsd !== undefined ? total("interruption-cost", "cost of lost attempts (in the cost)", totals.interruptionCostUsd, formatCost(totals.interruptionCostUsd)) : "",
    totals.spotNetSavedUsd !== undefined ? total("spot-net-saved", "net against on demand", totals.spotNetSavedUsd, formatNetSaving(totals.spotNetSavedUsd)) : "",
    `</dl>`,
  ];

  const charts = [
    histogramSvg(numbers(ran, (e) => e.seconds), { id: "wall-seconds", title: "Wall time per subject", xLabel: "wall time per subject (s)", format: (s, width) => s.toFixed(decimalsFor(width, 0)) }),
    histogramSvg(numbers(ran, (e) => e.costUsd), { id: "cost", title: "Cost per subject", xLabel: "cost per subject (USD)", format: (usd, width) => `$${usd.toFixed(decimalsFor(width, 2))}` }),
  ];

  const table = [
    `<table id="subjects"><colgroup><col style="width:15%"><col style="width:8%"><col style="width:20%"><col style="width:7%"><col style="width:7%"><col style="width:7%"><col style="width:20%"><col style="width:16%"></colgroup>`,
    `<thead><tr><th>subject</th><th>status</th><th>reason</th><th>wall (s)</th><th>billed (s)</th><th>cost</th><th>results</th><th>log</th></tr></thead><tbody>`,
    ...rows.map((e) => subjectRow(e, dir, options.localLogs)),
    `</tbody></table>`,
    listSkipped ? "" : `<p class="note" id="skipped-note">${skipped.length} subjects skipped (they had succeeded before) are counted above, not listed.</p>`,
  ];

  return [
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">`,
    // Nothing but the page's own styles: no script runs, nothing is fetched, whatever a message says.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    `<title>Batch ${escapeHtml(result.batchId)}</title><style>${CSS}</style></head><body>`,
    ...header,
    `<h2>Distribution</h2><div class="charts">${charts.join("")}</div>`,
    `<h2>Subjects</h2>`,
    ...table,
    `</body></html>`,
    "",
  ].join("\n");
}

function subjectRow(e: BatchEntry, dir: string, localLogs: ReadonlySet<string> | undefined): string {
  const num = (field: string, value: number | undefined, text: (v: number) => string) =>
    value === undefined ? `<td class="num" data-field="${field}"></td>` : `<td class="num" data-field="${field}" data-value="${value}">${escapeHtml(text(value))}</td>`;
  const message = e.outcome !== "succeeded" && e.message ? `<div class="message">${escapeHtml(clip(printable(e.message)))}</div>` : "";
  const results = e.resultsUrl ? link(e.resultsUrl, e.resultsUrl, "results") : e.outcome === "skipped" && e.succeededBefore ? `done before as ${escapeHtml(e.succeededBefore)}` : "none from this job";
  const logs = [
    e.logUrl ? link(e.logUrl, "job log (S3)", "log") : "",
    e.logPath && localLogs?.has(e.subject) ? link(path.relative(dir, e.logPath).split(path.sep).map(encodeURIComponent).join("/"), "batch log", "batch-log") : "",
  ].filter(Boolean);
  return [
    `<tr data-subject="${escapeHtml(e.subject)}" data-outcome="${escapeHtml(e.outcome)}">`,
    `<td data-field="subject">${escapeHtml(e.subject)}</td>`,
    `<td data-field="status" class="${cssClass(e.outcome)}">${escapeHtml(e.outcome)}</td>`,
    `<td data-field="reason">${escapeHtml(e.reason ?? "")}${message}</td>`,
    num("wall-seconds", e.seconds, (v) => String(Math.round(v))),
    num("billed-seconds", e.billedSeconds, String),
    num("cost", e.costUsd, formatCost),
    `<td data-field="results">${results}</td>`,
    `<td data-field="log">${logs.join("<br>")}</td>`,
    `</tr>`,
  ].join("");
}

/**
 * A link only to S3 or to a file beside the page (relative, plain characters); any other URL (javascript:, http:,
 * one padded with whitespace that a browser would strip) is shown as text.
 */
function link(href: string, text: string, kind: string): string {
  const safe = /^s3:\/\/[^\s\x00-\x1f]+$/.test(href) || /^[A-Za-z0-9%._~-][A-Za-z0-9%._~/-]*$/.test(href);
  return safe ? `<a href="${escapeHtml(href)}" data-link="${kind}">${escapeHtml(text)}</a>` : escapeHtml(text);
}

/** Decimals that tell bin edges `width` apart, at least `least` (one bin, width 0: whole seconds, cents to 4 places). */
const decimalsFor = (width: number, least: number) => (width > 0 ? Math.min(6, Math.max(least, -Math.floor(Math.log10(width)))) : least === 0 ? 0 : 4);
const numbers = (entries: BatchEntry[], of: (e: BatchEntry) => number | undefined) => entries.map(of).filter((v): v is number => v !== undefined && Number.isFinite(v));
const clip = (text: string) => (text.length > MESSAGE_CHARS ? `${text.slice(0, MESSAGE_CHARS)}…` : text);
const cssClass = (outcome: string) => outcome.replace(/[^a-z-]/g, "");

/** The instance types and prices the costs were reckoned at, each with its source and date (a cost is traceable). */
function pricesUsed(entries: readonly BatchEntry[]): string {
  const seen = new Map<string, string>();
  for (const e of entries) {
    if (!e.price) continue;
    const text = `${e.instanceType ?? "instance"} at ${formatRate(e.price.usdPerHour)} (${formatPrice(e.price)})`;
    seen.set(text, text);
  }
  if (seen.size === 0) return "";
  return `<dt>priced at</dt><dd id="prices">${[...seen.values()].map((t) => `<span class="price">${escapeHtml(printable(t))}</span>`).join("<br>")}</dd>`;
}

/** Write the page beside the batch's summary.json; a failure to write it is said, never fatal to the batch. */
export function writeBatchReport(result: BatchResult): string | undefined {
  const reportPath = result.reportPath ?? path.join(path.dirname(result.summaryPath), "report.html");
  const localLogs = new Set(result.entries.filter((e) => e.logPath && fs.existsSync(e.logPath)).map((e) => e.subject));
  try {
    // A whole page or none, and never written through a link planted at its name.
    writeFileWhole(reportPath, renderBatchReport(result, { localLogs }));
    return reportPath;
  } catch (err) {
    process.stderr.write(`cloudcompute: the batch report could not be written to ${reportPath}: ${(err as Error).message}\n`);
    return undefined;
  }
}
