/** Inline SVG histograms for the batch report (driver/batch-report.ts): no script, no external resource. */
import { escapeHtml } from "./html";
import { niceStep } from "./chart-scale";

export interface HistogramOptions {
  /** The chart's title, e.g. "Wall time per subject". */
  title: string;
  /** The x axis's label with its unit, e.g. "wall time (s)". */
  xLabel: string;
  /** A bin edge as the axis shows it, to the precision of the bins' width. */
  format: (value: number, binWidth: number) => string;
  /** Where the chart is found in the DOM (data-chart). */
  id: string;
}

const WIDTH = 560;
const HEIGHT = 260;
const PAD = { left: 60, right: 40, top: 34, bottom: 58 };
const MAX_BINS = 12;

export interface Bin {
  from: number;
  to: number;
  count: number;
}

/** Equal bins on round edges covering [min, max], about √n of them (at most 12); one bin when all values are equal. */
export function binsOf(values: readonly number[]): Bin[] {
  if (values.length === 0) return [];
  // A loop, not Math.min(...values): spreading a study's hundreds of thousands of values overflows the stack.
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (max === min) return [{ from: min, to: max, count: values.length }];
  const target = Math.min(MAX_BINS, Math.max(2, Math.ceil(Math.sqrt(values.length))));
  const step = niceStep((max - min) / target);
  const start = Math.floor(min / step) * step;
  const n = Math.max(1, Math.ceil((max - start) / step - 1e-9));
  // Edges as start + i·step, rounded off float noise (0.1 + 0.2) so the axis prints them cleanly.
  const edge = (i: number) => Number((start + i * step).toPrecision(12));
  const bins: Bin[] = Array.from({ length: n }, (_, i) => ({ from: edge(i), to: edge(i + 1), count: 0 }));
  for (const v of values) bins[Math.min(n - 1, Math.floor((v - start) / step + 1e-9))].count++;
  return bins;
}

export function histogramSvg(values: readonly number[], options: HistogramOptions): string {
  const title = `<text x="${WIDTH / 2}" y="18" text-anchor="middle" class="chart-title">${escapeHtml(options.title)}</text>`;
  const open = `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeHtml(options.title)}" data-chart="${escapeHtml(options.id)}">`;
  const bins = binsOf(values);
  if (bins.length === 0) {
    return `${open}${title}<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle" class="chart-empty">no subject has a value yet</text></svg>`;
  }
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const maxCount = bins.reduce((most, b) => Math.max(most, b.count), 0);
  const barW = plotW / bins.length;
  const binWidth = bins[0].to - bins[0].from;
  const baseY = PAD.top + plotH;
  const parts: string[] = [open, title];
  // y axis: subjects, with 0 and the tallest bar's count.
  parts.push(`<line x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${baseY}" class="axis"/>`);
  parts.push(`<line x1="${PAD.left}" y1="${baseY}" x2="${PAD.left + plotW}" y2="${baseY}" class="axis"/>`);
  for (const tick of maxCount > 1 ? [0, maxCount] : [0, 1]) {
    const y = baseY - (tick / Math.max(1, maxCount)) * plotH;
    parts.push(`<text x="${PAD.left - 6}" y="${y + 4}" text-anchor="end" class="tick">${tick}</text>`);
  }
  parts.push(`<text transform="translate(16 ${PAD.top + plotH / 2}) rotate(-90)" text-anchor="middle" class="axis-label">subjects</text>`);
  bins.forEach((bin, i) => {
    const h = (bin.count / maxCount) * plotH;
    const x = PAD.left + i * barW;
    const label = `${options.format(bin.from, binWidth)}–${options.format(bin.to, binWidth)}: ${bin.count}`;
    parts.push(`<rect x="${(x + 1).toFixed(1)}" y="${(baseY - h).toFixed(1)}" width="${Math.max(1, barW - 2).toFixed(1)}" height="${h.toFixed(1)}" class="bar" data-count="${bin.count}"><title>${escapeHtml(label)}</title></rect>`);
    if (bin.count > 0) parts.push(`<text x="${(x + barW / 2).toFixed(1)}" y="${(baseY - h - 4).toFixed(1)}" text-anchor="middle" class="count">${bin.count}</text>`);
  });
  // x axis: bin edges, every other one when crowded, so labels never overlap.
  const edges = bins.length === 1 ? [bins[0].from] : [bins[0].from, ...bins.map((b) => b.to)];
  const every = edges.length > 7 ? 2 : 1;
  const last = edges.length - 1;
  edges.forEach((edge, i) => {
    if (i !== last && (i % every !== 0 || last - i < every)) return;
    const x = bins.length === 1 ? PAD.left + barW / 2 : PAD.left + i * barW;
    parts.push(`<line x1="${x.toFixed(1)}" y1="${baseY}" x2="${x.toFixed(1)}" y2="${baseY + 4}" class="axis"/>`);
    parts.push(`<text x="${x.toFixed(1)}" y="${baseY + 17}" text-anchor="middle" class="tick">${escapeHtml(options.format(edge, binWidth))}</text>`);
  });
  parts.push(`<text x="${PAD.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle" class="axis-label">${escapeHtml(options.xLabel)}</text>`);
  parts.push("</svg>");
  return parts.join("");
}
