import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { backendUrl } from "../common/paths";
import { platformNamed } from "./platform";
import { secretsPassphraseProblem, stagedSpec } from "./preflight";
import { formatCost, formatPrice, formatRate } from "./summary";
import { estimateCost, estimateForSeconds, flatPrices, type Estimate, type JobPrices } from "../job/pricing";
import { comparisonsOf } from "./instance-type-auto";
import { CONFIG_KEYS, DEPLOY_KEYS } from "../job/config-keys";
import { INSTANCE_TYPE_PATTERN, redactSpec, type JobSpec } from "../job/spec";
import { flagOrFile, readConfigFile, type ResolvedJob, type SpecFlags } from "./options";

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

/** What a dry run's estimate is asked for: `--expected-minutes` (else a comparison's measure), `--price-per-hour`, a batch's subjects. */
export interface EstimateRequest {
  expectedMinutes?: number;
  pricePerHour?: number;
  subjects?: number;
}

/**
 * The measured run of the job's own instance type (succeeded), for its image, command, platform and region: from the
 * comparison `--instance-type auto` chose it from, else the newest that has one (as auto passes over comparisons
 * where nothing succeeded).
 */
export function measuredRun(resolved: ResolvedJob): { comparisonId: string; createdAt: string; measuredSeconds: number } | undefined {
  const { spec, instanceTypeChoice } = resolved;
  for (const comparison of comparisonsOf({ image: spec.container.image, command: spec.container.command, platform: resolved.platform, region: spec.instance.region })) {
    if (instanceTypeChoice && comparison.comparisonId !== instanceTypeChoice.comparisonId) continue;
    const run = comparison.types.find((t) => t.instanceType === spec.instance.type && t.outcome === "succeeded" && (t.billedSeconds ?? t.instanceSeconds) !== undefined);
    if (run) return { comparisonId: comparison.comparisonId, createdAt: comparison.createdAt, measuredSeconds: (run.billedSeconds ?? run.instanceSeconds)! };
  }
  return undefined;
}

/**
 * `--dry-run`'s estimate: what the job (times `subjects`, for a batch) would cost, at the prices a finished job is
 * charged at (or `--price-per-hour`), with their source and date, for the seconds a comparison measured on this
 * instance type — or `--expected-minutes`, which wins when given. Undefined when neither says how long it runs.
 */
export async function estimateFor(resolved: ResolvedJob, request: EstimateRequest = {}): Promise<Estimate | { unknown: string } | undefined> {
  const measured = measuredRun(resolved);
  if (request.expectedMinutes === undefined && !measured) return undefined;
  const prices = await estimatePrices(resolved.platform, resolved.spec.instance, request.pricePerHour);
  if ("unknown" in prices) return prices;
  const subjects = request.subjects ?? 1;
  if (request.expectedMinutes !== undefined) return estimateCost(request.expectedMinutes, prices, subjects, { kind: "expected-minutes", ...(measured ? { overrides: measured } : {}) });
  return estimateForSeconds(measured!.measuredSeconds, prices, subjects, { kind: "comparison", instanceType: resolved.spec.instance.type, ...measured! });
}

/** The prices an estimate uses: `--price-per-hour`, else what a finished job of this instance is charged at. */
async function estimatePrices(platform: string, instance: JobSpec["instance"], pricePerHour: number | undefined): Promise<JobPrices | { unknown: string }> {
  if (pricePerHour !== undefined) return flatPrices(pricePerHour);
  const prices = await platformNamed(platform).prices({ instance } as JobSpec).catch(() => undefined);
  return prices ?? { unknown: `no price known for ${instance.type} in ${instance.region}: give --price-per-hour` };
}

/** The estimate as one line for the terminal. */
export function estimateLine(estimate: Estimate | { unknown: string }): string {
  if ("unknown" in estimate) return `estimate: ${estimate.unknown}`;
  const { instance, volume, basis } = estimate;
  const parts = [`instance ${formatCost(instance.usd)} at ${formatRate(instance.usdPerHour)} (${formatPrice(instance)})`];
  if (volume) parts.push(`${volume.gib} GiB gp3 ${formatCost(volume.usd)} (${formatPrice(volume)})`);
  const batch = estimate.subjects > 1 ? `; ${estimate.subjects} subjects ${formatCost(estimate.totalUsd)}` : "";
  const running =
    basis.kind === "comparison"
      ? `${basis.measuredSeconds} s as measured on ${basis.instanceType} (from comparison ${basis.comparisonId} of ${basis.createdAt})`
      : `${estimate.expectedMinutes} min`;
  const overridden = basis.kind === "expected-minutes" && basis.overrides ? `; --expected-minutes wins over comparison ${basis.overrides.comparisonId} of ${basis.overrides.createdAt} (measured ${basis.overrides.measuredSeconds} s)` : "";
  return `estimate: ${formatCost(estimate.perSubjectUsd)} per subject for ${running}: ${parts.join(" + ")}${batch}${overridden}`;
}

/**
 * A single job's `--dry-run`: what would be refused (as a warning), the estimate (stderr line and `estimate`), the
 * spec, stack and compute as JSON, and the user-data after it in the plain form. Exit 0: nothing was created.
 */
export async function showDryRun(
  resolved: ResolvedJob,
  options: { quotas?: unknown; expectedMinutes?: number; pricePerHour?: number; json: boolean; printJson: (value: unknown) => void; warn: (line: string) => void },
): Promise<number> {
  const secrets = secretsPassphraseProblem(resolved.spec, backendUrl(resolved.backend));
  if (secrets) options.warn(`without --dry-run this job would be refused (exit 2): ${secrets}`);
  const estimate = await estimateFor(resolved, { expectedMinutes: options.expectedMinutes, pricePerHour: options.pricePerHour });
  if (estimate) process.stderr.write(`${estimateLine(estimate)}\n`);
  const { instanceTypeChoice } = resolved;
  const rendered: Record<string, unknown> = { ...dryRun(resolved), quotas: options.quotas, ...(instanceTypeChoice ? { instanceTypeChoice } : {}), ...(estimate ? { estimate } : {}) };
  if (options.json) options.printJson(rendered);
  else {
    const { userData, ...rest } = rendered;
    process.stdout.write(JSON.stringify(rest, null, 2) + "\n");
    if (typeof userData === "string") process.stdout.write(`--- user-data ---\n${userData}`);
  }
  return 0;
}

/**
 * `--expected-minutes` of a dry run whose job is refused (an input naming another subject, a missing image...): the
 * cost depends only on the instance, so it is still estimated, from the instance keys of the flags and config file,
 * beside the refusal. Undefined when those do not name a plain instance type and region.
 */
export async function estimateOfRefusedJob(flags: SpecFlags, request: EstimateRequest & { expectedMinutes: number }): Promise<Estimate | { unknown: string } | undefined> {
  let file;
  try {
    file = readConfigFile(flags.config);
  } catch {
    return undefined;
  }
  const value = (specPath: string) => {
    const entry = CONFIG_KEYS.find((key) => key.specPath.join(".") === specPath);
    return entry && flagOrFile(flags, file, entry);
  };
  const type = value("instance.type");
  const region = value("instance.region");
  const platform = flagOrFile(flags, file, DEPLOY_KEYS.platform) ?? "aws";
  if (!type || !INSTANCE_TYPE_PATTERN.test(type) || !region || !/^[a-z]{2}(-[a-z]+)+-\d$/.test(region) || (platform !== "aws" && platform !== "local")) return undefined;
  const gib = Number(value("instance.rootVolumeGiB") ?? 50);
  const instance = { type, region, spot: value("instance.spot") === "true", rootVolumeGiB: Number.isInteger(gib) && gib > 0 ? gib : 50 } as JobSpec["instance"];
  const prices = await estimatePrices(platform, instance, request.pricePerHour);
  if ("unknown" in prices) return prices;
  return estimateCost(request.expectedMinutes, prices, request.subjects ?? 1, { kind: "expected-minutes" });
}

/** A refused dry run's estimate: the line on stderr and, with --json, `{ dryRun, refused, estimate }` on stdout. */
export async function showRefusedEstimate(flags: SpecFlags, refusal: Error, request: EstimateRequest & { expectedMinutes: number }, json: boolean, printJson: (value: unknown) => void): Promise<void> {
  const estimate = await estimateOfRefusedJob(flags, request).catch(() => undefined);
  if (!estimate) return;
  process.stderr.write(`${estimateLine(estimate)} (the job itself is refused, below)\n`);
  if (json) printJson({ dryRun: true, refused: { exitCode: 2, message: refusal.message }, estimate });
}
