/**
 * Prices and billing arithmetic, pure (no I/O; driver/pricing.ts fetches and caches). Every price says where it came
 * from and when, so a summary's cost can be traced to its source.
 */
import { PRICE_TABLE } from "./price-table";

export type PriceSource = "pricing-api" | "spot-history" | "cache" | "built-in table" | "--price-per-hour" | "--compare" | "local (no charge)";

/** A price as a summary shows it: USD per hour, where it came from, and its date (ISO). */
export interface Price {
  usdPerHour: number;
  source: PriceSource;
  asOf: string;
  /** What the reader should know about it (e.g. a table price used outside its region, or spot falling back). */
  note?: string;
}

/** The root volume's price. */
export interface VolumePrice {
  gib: number;
  usdPerGibMonth: number;
  source: PriceSource;
  asOf: string;
}

/** What a job's compute costs: the instance and its root volume (none for --price-per-hour, which covers all). */
export interface JobPrices {
  instance: Price;
  volume?: VolumePrice;
  /** A spot job's on-demand price for the same type: what spot saved is measured against it. */
  onDemand?: Price;
}

/** AWS bills Linux instances (and EBS volumes) per second, with a minimum of 60 s. */
export const MINIMUM_BILLED_SECONDS = 60;
/** EBS GiB-months are prorated over a 30-day month. */
const HOURS_PER_MONTH = 30 * 24;

export function billedSeconds(seconds: number): number {
  return Math.max(MINIMUM_BILLED_SECONDS, Math.ceil(seconds));
}

/** USD rounded to a hundredth of a cent, as summaries show it. */
export function roundUsd(usd: number): number {
  return Math.round(usd * 10000) / 10000;
}

export function volumeUsdPerHour(volume: VolumePrice): number {
  return (volume.gib * volume.usdPerGibMonth) / HOURS_PER_MONTH;
}

/** USD per hour of instance and volume together. */
export function totalUsdPerHour(prices: JobPrices): number {
  return prices.instance.usdPerHour + (prices.volume ? volumeUsdPerHour(prices.volume) : 0);
}

/**
 * The cost of one attempt whose instance (and volume, which lives and dies with it) ran `seconds`. A retried job is
 * billed for every attempt, each with its own minimum: driver/job-outcomes.ts costOfAttempts sums them.
 */
export function attemptCostUsd(seconds: number, prices: JobPrices): number {
  return roundUsd((billedSeconds(seconds) * totalUsdPerHour(prices)) / 3600);
}

/** One attempt of a job as billed: spot or not, its seconds and cost, and for spot what on-demand would have cost. */
export interface AttemptCost {
  jobId: string;
  spot: boolean;
  billedSeconds?: number;
  costUsd?: number;
  /** The same seconds at the on-demand price (spot attempts whose on-demand price is known). */
  onDemandUsd?: number;
  /** Why the attempt ended without success (a retried attempt: spot-interrupted, instance-lost, ...). */
  reason?: string;
}

/** Reasons an attempt's compute was lost: the work it paid for is gone (retried or not). */
const LOST_REASONS: ReadonlySet<string> = new Set(["spot-interrupted", "instance-lost"]);

/**
 * What spot (and retries) did to a job's bill. An attempt is lost when another followed it, or when its compute was
 * lost (spot-interrupted, instance-lost). `savedUsd`: the on-demand cost less the spot cost of the spot attempts that
 * were not lost (undefined when none has a known spot and on-demand cost: nothing saved can be claimed).
 * `interruptionsUsd`: what the lost attempts cost. `netSavedUsd`, only for a job whose last attempt was not lost: one
 * on-demand run of that attempt's seconds less everything paid — negative when interruptions cost more than spot saved.
 */
export interface SpotAccount {
  savedUsd?: number;
  interruptionsUsd: number;
  lostAttempts: number;
  netSavedUsd?: number;
}

/** Undefined for a job that neither ran on spot nor lost an attempt: nothing to account for. */
export function spotAccount(attempts: readonly AttemptCost[]): SpotAccount | undefined {
  if (attempts.length === 0) return undefined;
  const isLost = (a: AttemptCost, i: number) => i < attempts.length - 1 || (a.reason !== undefined && LOST_REASONS.has(a.reason));
  const lost = attempts.filter(isLost);
  if (lost.length === 0 && !attempts.some((a) => a.spot)) return undefined;
  const kept = attempts.filter((a, i) => !isLost(a, i) && a.spot && a.onDemandUsd !== undefined && a.costUsd !== undefined);
  const last = attempts[attempts.length - 1];
  const lastOnDemand = last.spot ? last.onDemandUsd : last.costUsd;
  const paid = attempts.every((a) => a.costUsd !== undefined) ? attempts.reduce((sum, a) => sum + a.costUsd!, 0) : undefined;
  return {
    ...(kept.length > 0 ? { savedUsd: roundUsd(kept.reduce((sum, a) => sum + (a.onDemandUsd! - a.costUsd!), 0)) } : {}),
    interruptionsUsd: roundUsd(lost.reduce((sum, a) => sum + (a.costUsd ?? 0), 0)),
    lostAttempts: lost.length,
    ...(!isLost(last, attempts.length - 1) && lastOnDemand !== undefined && paid !== undefined ? { netSavedUsd: roundUsd(lastOnDemand - paid) } : {}),
  };
}

/** Prices for a flat `--price-per-hour`: it covers instance and volume. */
export function flatPrices(usdPerHour: number, asOf = new Date().toISOString()): JobPrices {
  return { instance: { usdPerHour, source: "--price-per-hour", asOf } };
}

/** The table's on-demand price, or undefined for a type it does not hold. */
export function tablePrice(instanceType: string, region: string): Price | undefined {
  const usdPerHour = PRICE_TABLE.onDemandUsdPerHour[instanceType];
  if (usdPerHour === undefined) return undefined;
  const note = region === PRICE_TABLE.region ? undefined : `${PRICE_TABLE.region} price; ${region}'s may differ`;
  return { usdPerHour, source: PRICE_TABLE.source, asOf: PRICE_TABLE.asOf, ...(note ? { note } : {}) };
}

export function tableVolumePrice(gib: number): VolumePrice {
  return { gib, usdPerGibMonth: PRICE_TABLE.gp3UsdPerGibMonth, source: PRICE_TABLE.source, asOf: PRICE_TABLE.asOf };
}

/** Where an estimate's running time came from: a comparison's measured seconds, or `--expected-minutes`. */
export type EstimateBasis =
  | { kind: "comparison"; comparisonId: string; createdAt: string; instanceType: string; measuredSeconds: number }
  | { kind: "expected-minutes"; overrides?: { comparisonId: string; createdAt: string; measuredSeconds: number } };

export interface Estimate {
  expectedMinutes: number;
  /** Per subject: the instance (billing rules above) and its volume for the expected minutes. */
  perSubjectUsd: number;
  instance: Price & { billedSeconds: number; usd: number };
  volume?: VolumePrice & { usd: number };
  subjects: number;
  totalUsd: number;
  basis: EstimateBasis;
}

/** What a job (or `subjects` of them) is expected to cost if each runs `minutes`. */
export function estimateCost(minutes: number, prices: JobPrices, subjects = 1, basis: EstimateBasis = { kind: "expected-minutes" }): Estimate {
  return { ...estimateForSeconds(minutes * 60, prices, subjects, basis), expectedMinutes: minutes };
}

/** The same for a running time in seconds (a comparison's measured ones), billed as AWS bills them. */
export function estimateForSeconds(seconds: number, prices: JobPrices, subjects: number, basis: EstimateBasis): Estimate {
  const billed = billedSeconds(seconds);
  const instanceUsd = roundUsd((billed * prices.instance.usdPerHour) / 3600);
  const volumeUsd = prices.volume ? roundUsd((billed * volumeUsdPerHour(prices.volume)) / 3600) : 0;
  const perSubjectUsd = roundUsd(instanceUsd + volumeUsd);
  return {
    expectedMinutes: Math.round((seconds / 60) * 100) / 100,
    perSubjectUsd,
    instance: { ...prices.instance, billedSeconds: billed, usd: instanceUsd },
    ...(prices.volume ? { volume: { ...prices.volume, usd: volumeUsd } } : {}),
    subjects,
    totalUsd: roundUsd(perSubjectUsd * subjects),
    basis,
  };
}

/** The attributes the on-demand query filters on; a PriceList entry with any other value is not the price asked for. */
export const ON_DEMAND_FILTERS = { operatingSystem: "Linux", tenancy: "Shared", preInstalledSw: "NA", capacitystatus: "Used" } as const;

interface PriceListEntry {
  product?: { sku?: string; attributes?: Record<string, string> };
  terms?: { OnDemand?: Record<string, { priceDimensions?: Record<string, { unit?: string; beginRange?: string; pricePerUnit?: { USD?: string } }> }> };
}

/**
 * The on-demand USD/hour of `instanceType` at `location` from a GetProducts `PriceList` (one JSON document per SKU):
 * `terms.OnDemand.<offerTerm>.priceDimensions.<id>.pricePerUnit.USD` of the dimension whose unit is "Hrs". Entries
 * of another type, location or OS, and dimensions of other units, are passed over; of several hourly dimensions the
 * first tier (beginRange 0) counts, else the highest. Undefined when no entry prices it.
 */
export function parseOnDemandPriceList(priceList: readonly string[], instanceType: string, location: string): number | undefined {
  const hourly: Array<{ usd: number; first: boolean }> = [];
  for (const text of priceList) {
    let entry: PriceListEntry;
    try {
      entry = JSON.parse(text) as PriceListEntry;
    } catch {
      continue;
    }
    const attributes = entry.product?.attributes ?? {};
    if (attributes.instanceType !== instanceType || attributes.location !== location) continue;
    if (Object.entries(ON_DEMAND_FILTERS).some(([name, value]) => attributes[name] !== undefined && attributes[name] !== value)) continue;
    for (const term of Object.values(entry.terms?.OnDemand ?? {})) {
      for (const dimension of Object.values(term.priceDimensions ?? {})) {
        const usd = Number(dimension.pricePerUnit?.USD);
        if (dimension.unit !== "Hrs" || !Number.isFinite(usd) || usd <= 0) continue;
        hourly.push({ usd, first: (dimension.beginRange ?? "0") === "0" });
      }
    }
  }
  if (hourly.length === 0) return undefined;
  const firstTier = hourly.filter((h) => h.first);
  return Math.max(...(firstTier.length > 0 ? firstTier : hourly).map((h) => h.usd));
}
