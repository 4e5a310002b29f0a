import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { redactSpec } from "../job/spec";
import { backendUrl } from "../common/paths";
import type { ResolvedJob } from "./options";
import { platformNamed } from "./platform";
import { stagedSpec } from "./preflight";
import { formatCost, formatPrice, formatRate } from "./summary";
import { estimateCost, flatPrices, type Estimate } from "../job/pricing";

/** `--dry-run`: everything the job would be, nothing created. */
export function dryRun(resolved: ResolvedJob): Record<string, unknown> {
  const platform = platformNamed(resolved.platform);
  const spec = stagedSpec(resolved);
  const layout = jobLayout(spec);
  return {
    dryRun: true,
    stack: spec.jobId,
    project: "cloudcompute",
    backend: backendUrl(resolved.backend),
    platform: platform.name,
    spec: redactSpec(spec),
    specUrl: formatS3Url(layout.spec),
    resultsUrl: formatS3Url(layout.results),
    ...(layout.datasetDescription ? { datasetDescriptionUrl: formatS3Url(layout.datasetDescription) } : {}),
    markerUrl: formatS3Url(layout.marker),
    ...platform.render(spec, resolved.agentBundlePath),
  };
}

/**
 * `--expected-minutes` with `--dry-run`: what the job (times `subjects`, for a batch) would cost if it ran that long,
 * at the prices a finished job is charged at (or `--price-per-hour`), with their source and date.
 */
export async function estimateFor(resolved: ResolvedJob, minutes: number, options: { pricePerHour?: number; subjects?: number } = {}): Promise<Estimate | { unknown: string }> {
  const platform = platformNamed(resolved.platform);
  const prices = options.pricePerHour !== undefined ? flatPrices(options.pricePerHour) : await platform.prices(resolved.spec).catch(() => undefined);
  if (!prices) return { unknown: `no price known for ${resolved.spec.instance.type} in ${resolved.spec.instance.region}: give --price-per-hour` };
  return estimateCost(minutes, prices, options.subjects);
}

/** The estimate as one line for the terminal. */
export function estimateLine(estimate: Estimate | { unknown: string }): string {
  if ("unknown" in estimate) return `estimate: ${estimate.unknown}`;
  const { instance, volume } = estimate;
  const parts = [`instance ${formatCost(instance.usd)} at ${formatRate(instance.usdPerHour)} (${formatPrice(instance)})`];
  if (volume) parts.push(`${volume.gib} GiB gp3 ${formatCost(volume.usd)} (${formatPrice(volume)})`);
  const batch = estimate.subjects > 1 ? `; ${estimate.subjects} subjects ${formatCost(estimate.totalUsd)}` : "";
  return `estimate: ${formatCost(estimate.perSubjectUsd)} per subject for ${estimate.expectedMinutes} min: ${parts.join(" + ")}${batch}`;
}
