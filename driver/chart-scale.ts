/** Scales for the SVG charts (the batch report's histograms, the comparison's cost against time). */

/** 1, 2 or 5 times a power of ten, at least `raw` (float noise aside): steps a reader can take in at a glance. */
export function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw * (1 - 1e-9))!;
}
