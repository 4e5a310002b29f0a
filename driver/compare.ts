/**
 * `run --compare`: the same subject on every type at once, one job (stack, job id, lease) each under a prefix of its
 * own (job/layout.ts comparisonPrefix: never the subject's real results, pointer or lease), then the Comparison
 * (job/comparison.ts) assembled from their results and prices, printed and saved (driver/comparison-output.ts).
 */
import { randomBytes } from "node:crypto";
import { COMPARISON_KIND, COMPARISON_VERSION, comparisonKey, type BatchExtrapolation, type Comparison, type ComparedType } from "../job/comparison";
import { comparisonPrefix, makeJobId } from "../job/layout";
import { attemptCostUsd, tableVolumePrice, type Price, type VolumePrice } from "../job/pricing";
import { errorMessage } from "../common/errors";
import { ExitCode } from "./errors";
import type { ResolvedJob, SpecFlags } from "./options";
import type { JobResult } from "./run";
import { batchConcurrency, checkCompareFlags, checkTypesFitTogether, extrapolate, extrapolationAssumptions, parseCompareItems, requirePrices, type CompareItem } from "./compare-items";
import { DEFAULT_CONCURRENCY } from "./worker-env";

export interface CompareCommandOptions {
  /** The Ctrl-C signal, shared by every type's job: an interrupt tears all of them down. */
  signal: () => AbortSignal;
  printJson(value: unknown): void;
}

/** The prices a type's costs use; a given price covers instance and volume, as --price-per-hour does. */
export interface TypePrices {
  onDemand?: Price;
  spot?: Price;
  /** The root volume, added to looked-up prices only. */
  volume?: VolumePrice;
}

interface PlannedType {
  item: CompareItem;
  resolved: ResolvedJob;
  prices: TypePrices;
  /** Jobs at once a batch of this type would get (aws: capped to the quotas, and why). */
  batch: { concurrency: number; capped?: string };
}

/**
 * `comparison-20261129T154800123Z-<pid>-<random>`: sorts by time, as job ids do; the process id and random suffix
 * keep two comparisons started in the same millisecond apart.
 */
export function makeComparisonId(at: Date, unique = `${process.pid.toString(36)}-${randomBytes(3).toString("hex")}`): string {
  return `comparison-${at.toISOString().replace(/[-:]/g, "").replace(".", "")}-${unique}`;
}

/** Given prices as they are; the others looked up as a finished job's are (aws only: local needs every price given). */
export async function pricesFor(item: CompareItem, resolved: ResolvedJob, asOf: string): Promise<TypePrices> {
  const given = (usdPerHour: number): Price => ({ usdPerHour, source: "--compare", asOf });
  const prices: TypePrices = {
    ...(item.onDemandUsdPerHour !== undefined ? { onDemand: given(item.onDemandUsdPerHour) } : {}),
    ...(item.spotUsdPerHour !== undefined ? { spot: given(item.spotUsdPerHour) } : {}),
  };
  if (resolved.platform !== "aws") return prices;
  const { type, region, rootVolumeGiB } = resolved.spec.instance;
  const { ec2Client } = require("./platform") as typeof import("./platform");
  const { fetchSpotPrice, onDemandPrice } = require("./pricing") as typeof import("./pricing");
  const onDemand = prices.onDemand ?? (await onDemandPrice(type, region));
  const spot = prices.spot ?? (await fetchSpotPrice(ec2Client(region), type).catch(() => undefined));
  return { ...(onDemand ? { onDemand } : {}), ...(spot ? { spot } : {}), volume: tableVolumePrice(rootVolumeGiB) };
}

/** One subject's cost at `price` for `billedSeconds` (rounded as job/pricing.ts rounds); unknown unless finite. */
export function costAt(billedSeconds: number, price: Price | undefined, volume: VolumePrice | undefined): number | undefined {
  if (price === undefined) return undefined;
  // A given price covers instance and volume; a looked-up one adds the volume.
  const usd = attemptCostUsd(billedSeconds, { instance: price, ...(volume && price.source !== "--compare" ? { volume } : {}) });
  // JSON has no Infinity or NaN: written, they become null and make the whole file unreadable.
  return Number.isFinite(usd) ? usd : undefined;
}

/** A type's row of the Comparison from its job's result; the batch extrapolation for a succeeded one. */
export function comparedType(result: JobResult, instanceType: string, prices: TypePrices, spot: boolean, batchOf: { subjects: number; concurrency: number; capped?: string }): Comparison["types"][number] {
  const agent = Object.fromEntries(Object.entries(result.timings.agent).filter((entry): entry is [string, number] => entry[1] !== undefined));
  const wallSeconds = result.timings.driver.total ?? 0;
  const billed = result.billedSeconds;
  const onDemandUsd = billed === undefined ? undefined : costAt(billed, prices.onDemand, prices.volume);
  const spotUsd = billed === undefined ? undefined : costAt(billed, prices.spot, prices.volume);
  // As run: spot when the job ran on spot and a spot price is known; else on demand (an upper bound for spot).
  const costPerSubjectUsd = spot && spotUsd !== undefined ? spotUsd : onDemandUsd;
  const type: ComparedType = {
    instanceType,
    jobId: result.jobId,
    outcome: result.outcome,
    ...(result.outcome !== "succeeded" ? { reason: result.reason ?? result.message.split("\n")[0] } : {}),
    wallSeconds,
    phases: { driver: { ...result.timings.driver }, agent },
    ...(result.instanceSeconds !== undefined ? { instanceSeconds: result.instanceSeconds } : {}),
    ...(billed !== undefined ? { billedSeconds: billed } : {}),
    ...(prices.onDemand ? { onDemandPrice: prices.onDemand } : {}),
    ...(prices.spot ? { spotPrice: prices.spot } : {}),
    ...(onDemandUsd !== undefined ? { onDemandUsd } : {}),
    ...(spotUsd !== undefined ? { spotUsd } : {}),
    ...(costPerSubjectUsd !== undefined ? { costPerSubjectUsd } : {}),
  };
  if (result.outcome !== "succeeded" || costPerSubjectUsd === undefined) return type;
  const extrapolated = extrapolate(costPerSubjectUsd, wallSeconds, batchOf.subjects, batchOf.concurrency);
  if (!Number.isFinite(extrapolated.costUsd) || !Number.isFinite(extrapolated.wallSeconds)) return type;
  const batch: BatchExtrapolation = batchOf.capped ? { ...extrapolated, concurrency: batchOf.concurrency, capped: batchOf.capped } : extrapolated;
  return { ...type, batch };
}

/** What the command run: the subject on every type, at once; the Comparison, printed and saved. */
export async function runCompareCommand(argv: Record<string, unknown>, flags: SpecFlags, options: CompareCommandOptions): Promise<number> {
  checkCompareFlags(argv);
  const items = parseCompareItems(argv.compare);
  const { resolvePackageJob } = require("./nda-package") as typeof import("./nda-package");
  const { inputSignerFor } = require("./input-signing") as typeof import("./input-signing");
  const { checkRegions, printWarnings } = require("./batch-command") as typeof import("./batch-command");
  const { RegionCache } = require("./regions") as typeof import("./regions");
  const signer = await inputSignerFor(flags);
  // The config's instance type (auto or not) is never used: each job gets its item's type, so the base takes the first.
  const typeFlags = (type: string): SpecFlags => ({ ...flags, instanceType: type, "instance-type": type });
  const base = await resolvePackageJob(typeFlags(items[0].instanceType), {}, {}, signer);
  requirePrices(items, base.platform);
  printWarnings(base.warnings);
  printWarnings(await checkRegions(base, new RegionCache()));
  const createdAt = new Date();
  const comparisonId = makeComparisonId(createdAt);
  const subjects = argv.subjects === undefined ? 1 : Number(argv.subjects);
  const concurrency = argv.concurrency === undefined ? DEFAULT_CONCURRENCY : Number(argv.concurrency);

  // Every type resolved (and checked) before any stack exists: a bad one stops them all.
  const planned: PlannedType[] = [];
  for (const item of items) {
    const type = item.instanceType;
    const output = comparisonPrefix(base.spec.outputs.prefix, comparisonId, type);
    const jobId = makeJobId(`${base.spec.subject}-${type}`, createdAt);
    const resolved = await resolvePackageJob({ ...typeFlags(type), output, jobId, "job-id": jobId }, {}, {}, signer);
    planned.push({ item, resolved, prices: {}, batch: { concurrency } });
  }
  if (base.platform === "aws") await checkQuotas(planned, subjects, printWarnings);
  for (const plan of planned) plan.prices = await pricesFor(plan.item, plan.resolved, createdAt.toISOString());

  const { runJobWithRetries } = require("./run") as typeof import("./run");
  const { jobSummary } = require("./summary") as typeof import("./summary");
  const signal = options.signal();
  process.stderr.write(`comparison ${comparisonId}: ${base.spec.subject} on ${items.map((i) => i.instanceType).join(", ")} at once\n`);
  const results = await Promise.all(
    planned.map(({ resolved, prices }) => {
      // The job's own costUsd at the price given for how it runs (spot or on demand); looked up when none was given.
      const given = resolved.spec.instance.spot && prices.spot?.source === "--compare" ? prices.spot : prices.onDemand?.source === "--compare" ? prices.onDemand : undefined;
      return runJobWithRetries(resolved, { retries: 0, pricePerHour: given?.usdPerHour, verbose: Boolean(argv.verbose), signal }).catch((err): JobResult => failedToStart(resolved, err));
    }),
  );
  for (const result of results) process.stderr.write(jobSummary(result));

  const comparison: Comparison = {
    kind: COMPARISON_KIND,
    version: COMPARISON_VERSION,
    comparisonId,
    createdAt: createdAt.toISOString(),
    key: comparisonKey(base.spec.container.image, base.spec.container.command),
    image: base.spec.container.image,
    command: [...base.spec.container.command],
    subject: base.spec.subject,
    platform: base.platform,
    region: base.spec.instance.region,
    subjects,
    concurrency,
    spot: base.spec.instance.spot,
    types: planned.map((plan, i) => comparedType(results[i], plan.item.instanceType, plan.prices, plan.resolved.spec.instance.spot, { subjects, ...plan.batch })),
  };
  comparison.assumptions = extrapolationAssumptions(comparison);
  const { comparisonTable, saveComparison } = require("./comparison-output") as typeof import("./comparison-output");
  // Shown before saving: a save that fails must not lose the paid-for results. The table is the output (stdout)
  // unless --json's document is.
  const shown = `\n${comparisonTable(comparison, { concurrencyGiven: argv.concurrency !== undefined, wide: Boolean(argv.wide) })}`;
  if (argv.json) {
    process.stderr.write(shown);
    options.printJson(comparison);
  } else process.stdout.write(shown);
  const saved = saveComparison(comparison);
  if ("files" in saved) process.stderr.write(`saved: ${saved.files.json}\n       ${saved.files.csv}\n       ${saved.files.svg}\n`);
  else process.stderr.write(`warning: the comparison was not saved (${saved.error}): its results are above only, and --instance-type auto will not see it\n`);
  return compareExitCode(results.map((r) => r.outcome), signal.aborted, "files" in saved);
}

/** 130 when interrupted; 3 when the comparison could not be saved; 1 when a type did not succeed; else 0. */
export function compareExitCode(outcomes: readonly string[], aborted: boolean, saved: boolean): number {
  if (aborted && outcomes.includes("interrupted")) return ExitCode.interrupted;
  if (!saved) return ExitCode.infra;
  return outcomes.every((o) => o === "succeeded") ? ExitCode.ok : ExitCode.jobFailed;
}

/** A type whose job was refused before its stack existed (its lease, say): in the table with the reason. */
function failedToStart(resolved: ResolvedJob, err: unknown): JobResult {
  return {
    jobId: resolved.spec.jobId,
    subject: resolved.spec.subject,
    platform: resolved.platform,
    outcome: "error",
    exitCode: ExitCode.infra,
    reason: "not-started",
    message: errorMessage(err),
    resultsUrl: "",
    markerUrl: "",
    logUrl: "",
    timings: { driver: {}, agent: {} },
    attempts: [],
  };
}

/**
 * Each type's job against the account's quotas (aws), before anything exists; all of them run at once. Also what
 * the extrapolated batch's `concurrency` jobs at once would be capped to, as a batch of that type would be.
 */
async function checkQuotas(planned: PlannedType[], subjects: number, printWarnings: (lines: Iterable<string>) => void): Promise<void> {
  const { capacityFor } = require("./quota-reads") as typeof import("./quota-reads");
  const { checkJobFits, quotaWarnings } = require("./quotas") as typeof import("./quotas");
  const reports = [];
  for (const plan of planned) {
    const report = await capacityFor(plan.resolved);
    printWarnings(quotaWarnings(report));
    checkJobFits(report);
    reports.push({ instanceType: plan.item.instanceType, report });
    plan.batch = batchConcurrency(report, plan.batch.concurrency, subjects);
  }
  checkTypesFitTogether(reports);
}
