/**
 * Where a job's prices come from (job/pricing.ts holds the arithmetic): spot from DescribeSpotPriceHistory in the
 * job's region; on-demand from the AWS Pricing API, cached for a day under $CLOUDCOMPUTE_HOME/prices/<region>.json;
 * when those cannot be reached or are denied, the dated table shipped with the package (job/price-table.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { EC2Client } from "@aws-sdk/client-ec2";
import type { JobSpec } from "../job/spec";
import { PRICING_LOCATIONS } from "../job/price-table";
import { ON_DEMAND_FILTERS, parseOnDemandPriceList, tablePrice, tableVolumePrice, type JobPrices, type Price } from "../job/pricing";
import { cloudcomputeHome } from "../common/paths";
import { errorMessage } from "../common/errors";
import { writeFileWhole } from "../common/files";

/** A price lookup may not hold up a dry run or a job's summary: past this the table answers. */
const LOOKUP_TIMEOUT_MS = 3000;
/** A cached Pricing API answer is reused this long. */
const CACHE_MAX_AGE_MS = 24 * 3600 * 1000;

export function priceCacheFile(region: string): string {
  return path.join(cloudcomputeHome(), "prices", `${path.basename(region)}.json`);
}

type CacheFile = Record<string, { usdPerHour: number; asOf: string }>;

function readCache(region: string): CacheFile {
  try {
    return JSON.parse(fs.readFileSync(priceCacheFile(region), "utf8")) as CacheFile;
  } catch {
    return {};
  }
}

function writeCache(region: string, instanceType: string, price: Price): void {
  const file = priceCacheFile(region);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    // Batch workers may write at once: whole files only.
    writeFileWhole(file, JSON.stringify({ ...readCache(region), [instanceType]: { usdPerHour: price.usdPerHour, asOf: price.asOf } }, null, 2));
  } catch {
    /* a cache that cannot be written only costs a lookup next time */
  }
}

/** Rejects after `ms`: the SDK's abort does not cover credential resolution, which may probe the instance metadata. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
    timer.unref();
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * On-demand USD/hour from the Pricing API (GetProducts, AmazonEC2; its endpoint is in us-east-1 whatever the job's
 * region). AWS_ENDPOINT_URL_PRICING points it elsewhere, as the SDK reads it.
 */
export async function fetchOnDemandPrice(instanceType: string, region: string): Promise<Price> {
  const location = PRICING_LOCATIONS[region];
  if (!location) throw new Error(`no Pricing API location known for region ${region}`);
  const sdk = require("@aws-sdk/client-pricing") as typeof import("@aws-sdk/client-pricing");
  const client = new sdk.PricingClient({ region: "us-east-1", maxAttempts: 1 });
  const filters = { location, instanceType, ...ON_DEMAND_FILTERS };
  try {
    const res = await withTimeout(
      client.send(
        new sdk.GetProductsCommand({ ServiceCode: "AmazonEC2", Filters: Object.entries(filters).map(([Field, Value]) => ({ Type: "TERM_MATCH", Field, Value })), MaxResults: 10 }),
        { abortSignal: AbortSignal.timeout(LOOKUP_TIMEOUT_MS) },
      ),
      LOOKUP_TIMEOUT_MS,
      "the AWS Pricing API",
    );
    const usdPerHour = parseOnDemandPriceList(res.PriceList ?? [], instanceType, location);
    if (usdPerHour === undefined) throw new Error(`the AWS Pricing API has no on-demand Linux price for ${instanceType} in ${location}`);
    return { usdPerHour, source: "pricing-api", asOf: new Date().toISOString() };
  } finally {
    client.destroy();
  }
}

/** The highest current spot price of the type in the region's zones (the zone is EC2's choice: an upper bound). */
export async function fetchSpotPrice(ec2: EC2Client, instanceType: string): Promise<Price | undefined> {
  const sdk = require("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
  const res = await withTimeout(
    ec2.send(new sdk.DescribeSpotPriceHistoryCommand({ InstanceTypes: [instanceType as never], ProductDescriptions: ["Linux/UNIX"], StartTime: new Date(), MaxResults: 20 }), {
      abortSignal: AbortSignal.timeout(LOOKUP_TIMEOUT_MS),
    }),
    LOOKUP_TIMEOUT_MS,
    "DescribeSpotPriceHistory",
  );
  const history = (res.SpotPriceHistory ?? []).filter((p) => Number(p.SpotPrice) > 0);
  if (history.length === 0) return undefined;
  const highest = history.reduce((a, b) => (Number(b.SpotPrice) > Number(a.SpotPrice) ? b : a));
  return { usdPerHour: Number(highest.SpotPrice), source: "spot-history", asOf: (highest.Timestamp ?? new Date()).toISOString() };
}

const onDemandLookups = new Map<string, Promise<Price | undefined>>();

/** On-demand: a fresh cache entry, else the Pricing API (cached), else the table. Looked up once per process. */
export function onDemandPrice(instanceType: string, region: string): Promise<Price | undefined> {
  const key = `${region}/${instanceType}`;
  let lookup = onDemandLookups.get(key);
  if (!lookup) onDemandLookups.set(key, (lookup = lookUpOnDemand(instanceType, region)));
  return lookup;
}

async function lookUpOnDemand(instanceType: string, region: string): Promise<Price | undefined> {
  const cached = readCache(region)[instanceType];
  if (cached && Date.now() - Date.parse(cached.asOf) < CACHE_MAX_AGE_MS) return { usdPerHour: cached.usdPerHour, source: "cache", asOf: cached.asOf };
  try {
    const price = await fetchOnDemandPrice(instanceType, region);
    writeCache(region, instanceType, price);
    return price;
  } catch (err) {
    const table = tablePrice(instanceType, region);
    if (!table) return undefined;
    const why = `the Pricing API did not answer (${errorMessage(err).split("\n")[0].slice(0, 160)})`;
    return { ...table, note: table.note ? `${table.note}; ${why}` : why };
  }
}

/** The prices of an aws job: its instance (spot or on-demand) and its gp3 root volume. Undefined when unknown. */
export async function awsJobPrices(spec: JobSpec, ec2: EC2Client): Promise<JobPrices | undefined> {
  const { type, region, spot, rootVolumeGiB } = spec.instance;
  let instance: Price | undefined;
  let spotProblem: string | undefined;
  if (spot) {
    try {
      instance = await fetchSpotPrice(ec2, type);
      if (!instance) spotProblem = "no spot price history";
    } catch (err) {
      spotProblem = `no spot price (${errorMessage(err).split("\n")[0].slice(0, 160)})`;
    }
  }
  const onDemand = await onDemandPrice(type, region);
  if (!instance) {
    // A spot job priced on demand: an upper bound, and said so.
    instance = onDemand && spotProblem ? { ...onDemand, note: [`${spotProblem}: the on-demand price, an upper bound`, onDemand.note].filter(Boolean).join("; ") } : onDemand;
  }
  // A spot price carries the on-demand one beside it: what spot saved is reckoned against it.
  const spotPriced = instance?.source === "spot-history";
  return instance ? { instance, volume: tableVolumePrice(rootVolumeGiB), ...(spotPriced && onDemand ? { onDemand } : {}) } : undefined;
}

/** Forget this process's lookups (tests: the next lookup reads the cache or asks again). */
export function forgetPriceLookups(): void {
  onDemandLookups.clear();
}
