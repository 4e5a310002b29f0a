/**
 * Prices with their source and date: the Pricing API's PriceList parsed from response documents written from AWS's
 * documented GetProducts format (test/fixtures/pricing-getproducts-*.json; moto does not serve Pricing), the billing
 * arithmetic as AWS bills Linux instances and EBS, the day-long cache, and the dated table when the API is unreachable.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { attemptCostUsd, billedSeconds, estimateCost, parseOnDemandPriceList, spotAccount, tableVolumePrice, type JobPrices } from "../job/pricing";
import { costOfAttempts, withEarlierAttempts } from "../driver/job-outcomes";
import { billingStart } from "../driver/job-phases";
import type { JobResult } from "../driver/run";
import { PRICE_TABLE } from "../job/price-table";
import { forgetPriceLookups, onDemandPrice, priceCacheFile } from "../driver/pricing";

const fixture = (name: string) => (JSON.parse(fs.readFileSync(path.join(__dirname, "fixtures", `pricing-getproducts-${name}.json`), "utf8")) as { PriceList: string[] });
const VIRGINIA = "US East (N. Virginia)";
const onDemand = (usdPerHour: number, gib?: number): JobPrices => ({
  instance: { usdPerHour, source: "pricing-api", asOf: "2026-11-29T00:00:00.000Z" },
  ...(gib ? { volume: tableVolumePrice(gib) } : {}),
});

describe("pricing: the Pricing API's PriceList", () => {
  it("takes the asked-for SKU's on-demand hourly price, passing over other OSes, regions and the Reserved term", () => {
    const doc = fixture("one-sku-among-others");
    expect(parseOnDemandPriceList(doc.PriceList, "m5.4xlarge", VIRGINIA)).to.equal(0.768);
    expect(parseOnDemandPriceList(doc.PriceList, "m5.4xlarge", "EU (Ireland)")).to.equal(0.856);
    expect(parseOnDemandPriceList(doc.PriceList, "m5.2xlarge", VIRGINIA)).to.equal(undefined);
  });

  it("of several price dimensions counts the first hourly tier, not a later tier or a fee", () => {
    expect(parseOnDemandPriceList(fixture("several-dimensions").PriceList, "m5.4xlarge", VIRGINIA)).to.equal(0.768);
  });

  it("finds nothing in a SKU of another tenancy, and skips an entry that is not JSON", () => {
    expect(parseOnDemandPriceList(fixture("no-match").PriceList, "m5.4xlarge", VIRGINIA)).to.equal(undefined);
    expect(parseOnDemandPriceList(["{not json", ...fixture("one-sku-among-others").PriceList], "m5.4xlarge", VIRGINIA)).to.equal(0.768);
  });
});

describe("pricing: billing arithmetic (per second, 60 s minimum)", () => {
  it("bills 59 s as 60 s, and 10 min 3 s as 603 s", () => {
    expect(billedSeconds(59)).to.equal(60);
    expect(billedSeconds(0.2)).to.equal(60);
    expect(billedSeconds(603.1)).to.equal(604);
    expect(attemptCostUsd(59, onDemand(0.768))).to.equal(0.0128); // 60 s at $0.768/h
    expect(attemptCostUsd(603, onDemand(0.768))).to.equal(0.1286); // 603 s at $0.768/h = 0.12864
  });

  it("adds the root volume, prorated per second over a 30-day month", () => {
    // 50 GiB × $0.08 / 720 h = $0.005556/h; an hour of m5.4xlarge with it:
    expect(attemptCostUsd(3600, onDemand(0.768, 50))).to.equal(0.7736);
  });

  it("prices spot below on demand at the same seconds, and bills every attempt of a retried spot job", () => {
    const spot: JobPrices = { instance: { usdPerHour: 0.3, source: "spot-history", asOf: "2026-11-29T00:00:00.000Z" } };
    expect(attemptCostUsd(603, spot)).to.equal(0.0503);
    expect(attemptCostUsd(603, spot)).to.be.lessThan(attemptCostUsd(603, onDemand(0.768)));
    // Interrupted after 30 s (billed 60 s at spot), retried on demand for 603 s: both are paid.
    const retried = costOfAttempts([
      { jobId: "a", spot: true, costUsd: attemptCostUsd(30, spot) },
      { jobId: "b", spot: false, costUsd: attemptCostUsd(603, onDemand(0.768)) },
    ]).costUsd;
    expect(retried).to.equal(0.005 + 0.1286);
    expect(retried).to.be.greaterThan(attemptCostUsd(603, onDemand(0.768)));
  });

  it("accounts for spot: what it saved against on-demand, what lost attempts cost, and the net against one on-demand run", () => {
    // One spot attempt of 603 s: $0.0503 at spot, $0.1286 at on-demand.
    const once = spotAccount([{ jobId: "a", spot: true, billedSeconds: 603, costUsd: 0.0503, onDemandUsd: 0.1286 }]);
    expect(once).to.deep.equal({ savedUsd: 0.0783, interruptionsUsd: 0, lostAttempts: 0, netSavedUsd: 0.0783 });
    // Interrupted after 30 s (billed 60 s: $0.005 at spot), then on demand for 603 s: the lost attempt saved nothing
    // (its work is gone), it cost $0.005, and the whole bill is $0.005 above one on-demand run.
    const retried = spotAccount([
      { jobId: "a", spot: true, billedSeconds: 60, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" },
      { jobId: "b", spot: false, billedSeconds: 603, costUsd: 0.1286 },
    ]);
    expect(retried).to.deep.equal({ interruptionsUsd: 0.005, lostAttempts: 1, netSavedUsd: -0.005 });
    // Interrupted with no retry left: the job's only attempt is lost; no saving, no net, its whole cost lost.
    expect(spotAccount([{ jobId: "a", spot: true, costUsd: 0.1, onDemandUsd: 0.3, reason: "spot-interrupted" }])).to.deep.equal({ interruptionsUsd: 0.1, lostAttempts: 1 });
    // Lost on spot, then a spot attempt that finished: only the finished one's saving counts.
    expect(spotAccount([
      { jobId: "a", spot: true, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" },
      { jobId: "b", spot: true, costUsd: 0.0503, onDemandUsd: 0.1286 },
    ])).to.deep.equal({ savedUsd: 0.0783, interruptionsUsd: 0.005, lostAttempts: 1, netSavedUsd: 0.0733 });
    // On demand, once: nothing to account for. A spot attempt without a known on-demand price (spot priced as on
    // demand when no spot price was found): no saving claimed, no net.
    expect(spotAccount([{ jobId: "a", spot: false, costUsd: 0.1286 }])).to.equal(undefined);
    expect(spotAccount([{ jobId: "a", spot: true, costUsd: 0.0503 }])).to.deep.equal({ interruptionsUsd: 0, lostAttempts: 0 });
  });

  it("folds every earlier attempt into a retried job's cost", () => {
    const last = { jobId: "b", subject: "s", platform: "aws", outcome: "succeeded", exitCode: 0, message: "", resultsUrl: "", markerUrl: "", logUrl: "", timings: { driver: {}, agent: {} }, attempts: ["a", "b"], costUsd: 0.1286, attemptCosts: [{ jobId: "b", spot: false, billedSeconds: 603, costUsd: 0.1286 }] } as JobResult;
    const folded = withEarlierAttempts([{ jobId: "a", spot: true, billedSeconds: 60, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" }], last);
    expect(folded.costUsd).to.equal(0.1336);
    expect(folded.attemptCosts!.map((a) => a.jobId)).to.deep.equal(["a", "b"]);
    expect(folded.spot).to.include({ interruptionsUsd: 0.005, lostAttempts: 1, netSavedUsd: -0.005 });
    // An attempt whose cost is unknown: the known part, marked as a lower bound (never a silent zero).
    expect(withEarlierAttempts([{ jobId: "a", spot: false }], last)).to.include({ costUsd: 0.1286, costIncomplete: true });
    expect(withEarlierAttempts([], last)).to.equal(last);
  });

  it("bills from the instance's launch, kept within the up that launched it", () => {
    expect(billingStart(1_000_500, 1_000_000, 1_060_000)).to.equal(1_000_500);
    expect(billingStart(999_000, 1_000_000, 1_060_000), "a clock behind ours").to.equal(1_000_000);
    expect(billingStart(1_070_000, 1_000_000, 1_060_000), "a clock ahead of ours").to.equal(1_060_000);
    expect(billingStart(undefined, 1_000_000, 1_060_000)).to.equal(undefined);
  });

  it("estimates M minutes per subject, instance and volume, times the subjects", () => {
    const estimate = estimateCost(10, onDemand(0.768, 50), 3);
    expect(estimate.instance).to.include({ billedSeconds: 600, usd: 0.128, source: "pricing-api" });
    expect(estimate.volume).to.include({ gib: 50, usd: 0.0009 });
    expect(estimate.perSubjectUsd).to.equal(0.1289);
    expect(estimate.totalUsd).to.equal(0.3867);
    expect(estimateCost(0.5, onDemand(0.768)).instance.billedSeconds, "half a minute bills the minimum").to.equal(60);
  });
});

describe("pricing: where on-demand prices come from", function () {
  this.timeout(30_000);
  // The environment as this suite finds it when it runs (other suites' hooks have set credentials and endpoints by
  // then), not as it was when the file was loaded: restoring that one would delete what later suites rely on.
  let saved: NodeJS.ProcessEnv = {};
  before(() => {
    saved = { ...process.env };
  });
  let server: Server | undefined;
  const requests: Array<{ target: string; body: { ServiceCode: string; Filters: Array<{ Field: string; Value: string }> } }> = [];

  /** A port nothing listens on: the API unreachable. */
  const closedPort = async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    return port;
  };

  beforeEach(() => {
    process.env.CLOUDCOMPUTE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "cc-pricing-"));
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: "testing", AWS_SECRET_ACCESS_KEY: "testing" });
    forgetPriceLookups();
  });
  afterEach(async () => {
    if (server) await new Promise((resolve) => server!.close(resolve));
    server = undefined;
    fs.rmSync(process.env.CLOUDCOMPUTE_HOME!, { recursive: true, force: true });
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  });

  it("falls back to the dated built-in table when the Pricing API is unreachable, and says why", async () => {
    process.env.AWS_ENDPOINT_URL_PRICING = `http://127.0.0.1:${await closedPort()}`;
    const price = await onDemandPrice("m5.4xlarge", "us-east-1");
    expect(price).to.include({ usdPerHour: 0.768, source: "built-in table", asOf: PRICE_TABLE.asOf });
    expect(price!.note).to.match(/Pricing API did not answer/);
    // Another region gets the table's us-east-1 price, marked as such; a type the table lacks has no price.
    expect((await onDemandPrice("m5.large", "eu-west-1"))!.note).to.match(/us-east-1 price; eu-west-1's may differ/);
    expect(await onDemandPrice("x9.nonesuch", "us-east-1")).to.equal(undefined);
    expect(fs.existsSync(priceCacheFile("us-east-1")), "a table price is not cached").to.equal(false);
  });

  it("asks the Pricing API with the region's location and the Linux filters, and reuses the answer from the cache for a day", async () => {
    const answer = fixture("one-sku-among-others");
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        requests.push({ target: String(req.headers["x-amz-target"]), body: JSON.parse(body) });
        res.writeHead(200, { "content-type": "application/x-amz-json-1.1" });
        res.end(JSON.stringify({ FormatVersion: "aws_v1", PriceList: answer.PriceList }));
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    process.env.AWS_ENDPOINT_URL_PRICING = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const fetched = await onDemandPrice("m5.4xlarge", "us-east-1");
    expect(fetched).to.include({ usdPerHour: 0.768, source: "pricing-api" });
    expect(requests).to.have.length(1);
    expect(requests[0].target).to.equal("AWSPriceListService.GetProducts");
    expect(requests[0].body.ServiceCode).to.equal("AmazonEC2");
    expect(Object.fromEntries(requests[0].body.Filters.map((f) => [f.Field, f.Value]))).to.deep.equal({
      location: VIRGINIA, instanceType: "m5.4xlarge", operatingSystem: "Linux", tenancy: "Shared", preInstalledSw: "NA", capacitystatus: "Used",
    });

    // Another process (a fresh lookup) within the day: the cache, with the date it was fetched.
    forgetPriceLookups();
    const cached = await onDemandPrice("m5.4xlarge", "us-east-1");
    expect(cached).to.deep.equal({ usdPerHour: 0.768, source: "cache", asOf: fetched!.asOf });
    expect(requests).to.have.length(1);

    // A day old: asked again.
    const file = priceCacheFile("us-east-1");
    fs.writeFileSync(file, JSON.stringify({ "m5.4xlarge": { usdPerHour: 0.5, asOf: new Date(Date.now() - 25 * 3600_000).toISOString() } }));
    forgetPriceLookups();
    expect(await onDemandPrice("m5.4xlarge", "us-east-1")).to.include({ usdPerHour: 0.768, source: "pricing-api" });
    expect(requests).to.have.length(2);
  });
});
