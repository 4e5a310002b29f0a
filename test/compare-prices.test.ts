/**
 * `run --compare` on aws: a type's prices when none is given are looked up as a finished job's are — spot from moto's
 * DescribeSpotPriceHistory, on demand from the dated table with the Pricing API on a closed port — and the root volume
 * is added to looked-up prices only; a given price is kept as given and covers everything.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createServer, type AddressInfo } from "node:net";
import { costAt, pricesFor } from "../driver/compare";
import type { ResolvedJob } from "../driver/options";
import { forgetPriceLookups } from "../driver/pricing";
import { PRICE_TABLE } from "../job/price-table";
import { roundUsd, volumeUsdPerHour } from "../job/pricing";
import { sharedMoto } from "./support/fixtures";

function awsJob(type: string): ResolvedJob {
  return { platform: "aws", spec: { instance: { type, region: "us-east-1", spot: false, rootVolumeGiB: 50 } } } as unknown as ResolvedJob;
}

describe("run --compare: prices on aws (moto EC2, Pricing API unreachable)", function () {
  this.timeout(60_000);
  let saved: NodeJS.ProcessEnv = {};

  before(async () => {
    await sharedMoto();
    saved = { ...process.env };
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    process.env.AWS_ENDPOINT_URL_PRICING = `http://127.0.0.1:${port}`;
    process.env.CLOUDCOMPUTE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "cc-compare-prices-"));
    forgetPriceLookups();
  });
  after(() => {
    fs.rmSync(process.env.CLOUDCOMPUTE_HOME!, { recursive: true, force: true });
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  });

  it("looks up what was not given: on demand (table, said why), spot (history), the volume beside them", async () => {
    const prices = await pricesFor({ instanceType: "m5.4xlarge" }, awsJob("m5.4xlarge"), "2026-11-29T00:00:00.000Z");
    expect(prices.onDemand).to.include({ usdPerHour: PRICE_TABLE.onDemandUsdPerHour["m5.4xlarge"], source: "built-in table" });
    expect(prices.onDemand!.note).to.match(/Pricing API did not answer/);
    expect(prices.spot?.source).to.equal("spot-history");
    expect(prices.spot!.usdPerHour).to.be.greaterThan(0);
    expect(prices.volume).to.include({ gib: 50, source: "built-in table" });
    const expected = roundUsd((600 * (prices.onDemand!.usdPerHour + volumeUsdPerHour(prices.volume!))) / 3600);
    expect(costAt(600, prices.onDemand, prices.volume)).to.equal(expected);
  });

  it("keeps a given price as given (source --compare, no volume added) and looks up only the other", async () => {
    const prices = await pricesFor({ instanceType: "c5.2xlarge", onDemandUsdPerHour: 0.5 }, awsJob("c5.2xlarge"), "2026-11-29T00:00:00.000Z");
    expect(prices.onDemand).to.deep.equal({ usdPerHour: 0.5, source: "--compare", asOf: "2026-11-29T00:00:00.000Z" });
    expect(prices.spot?.source).to.equal("spot-history");
    expect(costAt(600, prices.onDemand, prices.volume)).to.equal(roundUsd((600 * 0.5) / 3600));
  });

  it("a local type keeps exactly the prices given and looks nothing up", async () => {
    const local = { ...awsJob("m5.large"), platform: "local" } as ResolvedJob;
    expect(await pricesFor({ instanceType: "m5.large", onDemandUsdPerHour: 0.1 }, local, "2026-11-29T00:00:00.000Z")).to.deep.equal({
      onDemand: { usdPerHour: 0.1, source: "--compare", asOf: "2026-11-29T00:00:00.000Z" },
    });
  });
});
