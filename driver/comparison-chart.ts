/**
 * chart.svg of a comparison: cost per subject (y, USD) against wall time (x, minutes), one labelled point per type
 * that succeeded; the others are named below the axes with their outcome. Self-contained (no fonts, scripts or
 * links to fetch) and pure: the same Comparison gives the same bytes.
 */
import type { Comparison } from "../job/comparison";
import { escapeHtml } from "./html";
import { niceStep } from "./chart-scale";

export const CHART = { width: 800, height: 560, left: 100, right: 40, top: 80, bottom: 110 } as const;

/** Round steps (1, 2 or 5 × 10^k) from 0 past `max`, about `count` of them; their decimals for labels. */
export function niceTicks(max: number, count = 5): { ticks: number[]; decimals: number } {
  const top = max > 0 && Number.isFinite(max) ? max : 1;
  const step = niceStep(top / count);
  const steps = Math.max(1, Math.ceil(top / step - 1e-9));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return { ticks: Array.from({ length: steps + 1 }, (_, i) => Number((i * step).toFixed(decimals + 2))), decimals };
}

export interface ChartPoint {
  instanceType: string;
  minutes: number;
  usd: number;
  /** Position in the SVG's user space (y grows downwards). */
  x: number;
  y: number;
}

/** The plotted types (succeeded, with a cost), placed on axes that start at 0 and end at the last tick. */
export function chartGeometry(c: Comparison): { points: ChartPoint[]; xTicks: ReturnType<typeof niceTicks>; yTicks: ReturnType<typeof niceTicks>; left: Comparison["types"] } {
  const drawn = c.types.filter((t) => t.outcome === "succeeded" && t.costPerSubjectUsd !== undefined);
  const left = c.types.filter((t) => !drawn.includes(t));
  // 5% headroom: a point never sits on the plot's edge, where its label would run into the title.
  const xTicks = niceTicks(1.05 * Math.max(0, ...drawn.map((t) => t.wallSeconds / 60)));
  const yTicks = niceTicks(1.05 * Math.max(0, ...drawn.map((t) => t.costPerSubjectUsd!)));
  const xMax = xTicks.ticks[xTicks.ticks.length - 1];
  const yMax = yTicks.ticks[yTicks.ticks.length - 1];
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const points = drawn.map((t) => {
    const minutes = t.wallSeconds / 60;
    const usd = t.costPerSubjectUsd!;
    return { instanceType: t.instanceType, minutes, usd, x: round(CHART.left + (minutes / xMax) * plotWidth), y: round(CHART.top + plotHeight - (usd / yMax) * plotHeight) };
  });
  return { points, xTicks, yTicks, left };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Escaped for text and attributes as HTML is (the same five entities hold in XML); characters XML 1.0 cannot hold (C0 controls but tab and line breaks) dropped. */
export function escapeXml(text: string): string {
  // eslint-disable-next-line no-control-regex
  return escapeHtml(text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g, ""));
}

/** Long names (an image with its registry and digest) cut in the middle, so the title stays on the chart. */
export function shortened(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.ceil(max / 2) - 1)}…${text.slice(text.length - Math.floor(max / 2))}`;
}

/** The order of the points by cost, cheapest first: the palette and the legend follow it. */
const COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"];

export function comparisonChartSvg(c: Comparison): string {
  const { points, xTicks, yTicks, left } = chartGeometry(c);
  const { width } = CHART;
  // Room below the axes for every type not plotted (two fit in the margin).
  const height = CHART.height + Math.max(0, left.length - 2) * 16;
  const x0 = CHART.left;
  const x1 = width - CHART.right;
  const y0 = CHART.height - CHART.bottom;
  const y1 = CHART.top;
  const xMax = xTicks.ticks[xTicks.ticks.length - 1];
  const yMax = yTicks.ticks[yTicks.ticks.length - 1];
  const xAt = (v: number) => round(x0 + (v / xMax) * (x1 - x0));
  const yAt = (v: number) => round(y0 - (v / yMax) * (y0 - y1));
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<text x="${width / 2}" y="28" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(`Cost per subject vs wall time: ${shortened(c.image, 60)}`)}</text>`);
  parts.push(`<text x="${width / 2}" y="50" text-anchor="middle" fill="#444">${escapeXml(`subject ${c.subject} · ${c.platform} ${c.region} · ${c.comparisonId}`)}</text>`);
  // Grid and ticks.
  for (const v of xTicks.ticks) {
    const x = xAt(v);
    parts.push(`<line x1="${x}" y1="${y1}" x2="${x}" y2="${y0}" stroke="#e5e5e5"/>`);
    parts.push(`<line x1="${x}" y1="${y0}" x2="${x}" y2="${y0 + 6}" stroke="#000"/>`);
    parts.push(`<text class="x-tick" x="${x}" y="${y0 + 20}" text-anchor="middle">${v.toFixed(xTicks.decimals)}</text>`);
  }
  for (const v of yTicks.ticks) {
    const y = yAt(v);
    parts.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<line x1="${x0 - 6}" y1="${y}" x2="${x0}" y2="${y}" stroke="#000"/>`);
    parts.push(`<text class="y-tick" x="${x0 - 10}" y="${y + 4}" text-anchor="end">$${v.toFixed(yTicks.decimals)}</text>`);
  }
  parts.push(`<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="#000"/>`);
  parts.push(`<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y1}" stroke="#000"/>`);
  parts.push(`<text x="${(x0 + x1) / 2}" y="${y0 + 44}" text-anchor="middle">wall time per subject (minutes)</text>`);
  parts.push(`<text x="22" y="${(y0 + y1) / 2}" text-anchor="middle" transform="rotate(-90 22 ${(y0 + y1) / 2})">cost per subject (USD)</text>`);
  // Points, cheapest first; a label to the right, or to the left near the right edge.
  const byCost = [...points].sort((a, b) => a.usd - b.usd || a.minutes - b.minutes);
  // Labels top to bottom, each at least a line below the one above: points close together stay readable.
  const labelY = new Map<ChartPoint, number>();
  let lastY = -Infinity;
  for (const p of [...points].sort((a, b) => a.y - b.y)) labelY.set(p, (lastY = Math.max(round(p.y - 8), lastY + 15)));
  byCost.forEach((p, i) => {
    const color = COLORS[i % COLORS.length];
    const onLeft = p.x > x1 - 200;
    const label = `${p.instanceType}  $${p.usd} · ${Number(p.minutes.toFixed(2))} min`;
    parts.push(`<g class="point" data-type="${escapeXml(p.instanceType)}" data-usd="${p.usd}" data-minutes="${p.minutes}">`);
    parts.push(`<circle cx="${p.x}" cy="${p.y}" r="6" fill="${color}" stroke="#000" stroke-width="0.75"/>`);
    parts.push(`<text x="${round(p.x + (onLeft ? -10 : 10))}" y="${labelY.get(p)}" text-anchor="${onLeft ? "end" : "start"}" fill="#000">${escapeXml(label)}</text>`);
    parts.push(`</g>`);
  });
  if (points.length === 0) parts.push(`<text x="${(x0 + x1) / 2}" y="${(y0 + y1) / 2}" text-anchor="middle" fill="#a00">no type succeeded: nothing to plot</text>`);
  left.forEach((t, i) => {
    const why = `${t.instanceType}: ${t.outcome}${t.reason ? ` (${t.reason})` : ""}${t.outcome === "succeeded" ? ", cost unknown" : ""} — not plotted`;
    parts.push(`<text class="not-plotted" x="${x0}" y="${y0 + 68 + i * 16}" fill="#a00">${escapeXml(shortened(why, 110))}</text>`);
  });
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}
