/**
 * `run --compare`'s pure parts: the items parser and the flags it refuses, the batch extrapolation, the CSV's
 * RFC 4180 quoting and the chart's geometry; the table's width, what reaches the terminal and the SVG, saving and the
 * exit code. The whole command runs end to end in test/compare.test.ts.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { COMPARISON_KIND, COMPARISON_VERSION, comparisonKey, type Comparison, type ComparedType } from "../job/comparison";
import { comparisonPrefix } from "../job/layout";
import { batchConcurrency, checkCompareFlags, checkTypesFitTogether, extrapolate, extrapolationAssumptions, parseCompareItems, requirePrices } from "../driver/compare-items";
import { comparedType, compareExitCode, costAt, makeComparisonId } from "../driver/compare";
import type { JobResult } from "../driver/run";
import { parseComparison } from "../driver/comparisons";
import type { CapacityReport } from "../driver/quotas";
import { comparisonCsv, comparisonTable, csvField, saveComparison, TABLE_WIDTH } from "../driver/comparison-output";
import { CHART, chartGeometry, comparisonChartSvg, niceTicks } from "../driver/comparison-chart";
import { BadInputError } from "../driver/errors";
import { jobPolicyDocument } from "../infra/policy";
import { kwykSpec, OUTPUT_PREFIX } from "./support/job-specs";

function refused(run: () => unknown, message: RegExp): void {
  let error: unknown;
  try {
    run();
  } catch (err) {
    error = err;
  }
  expect(error, "refused").to.be.instanceOf(BadInputError);
  expect((error as Error).message).to.match(message);
}

function typeRow(instanceType: string, outcome: string, wallSeconds: number, costPerSubjectUsd?: number, reason?: string): ComparedType {
  return { instanceType, jobId: `job-s-${instanceType}`, outcome, ...(reason ? { reason } : {}), wallSeconds, phases: { driver: { up: 5, total: wallSeconds }, agent: { run: wallSeconds - 10 } }, ...(costPerSubjectUsd !== undefined ? { costPerSubjectUsd, billedSeconds: wallSeconds - 8 } : {}) };
}

function comparisonOf(types: ComparedType[]): Comparison {
  return { kind: COMPARISON_KIND, version: COMPARISON_VERSION, comparisonId: "comparison-1", createdAt: "2026-11-29T00:00:00.000Z", key: "k", image: "ghcr.io/lab/seg:1 <x>", command: ["run"], subject: "sub-01", platform: "aws", region: "us-east-1", subjects: 1, concurrency: 4, types };
}

describe("run --compare: items, extrapolation, CSV, chart", () => {
  it("parses TYPE, TYPE=PRICE and TYPE=PRICE/SPOT items", () => {
    expect(parseCompareItems("m5.xlarge, c5.2xlarge=0.34,m5.4xlarge=0.768/0.3")).to.deep.equal([
      { instanceType: "m5.xlarge" },
      { instanceType: "c5.2xlarge", onDemandUsdPerHour: 0.34 },
      { instanceType: "m5.4xlarge", onDemandUsdPerHour: 0.768, spotUsdPerHour: 0.3 },
    ]);
  });

  it("refuses each bad item with its own message", () => {
    refused(() => parseCompareItems("m5.xlarge"), /1 type\(s\) given; compare 2 to 8 types/);
    refused(() => parseCompareItems(Array.from({ length: 9 }, (_, i) => `m5.${i + 1}xlarge`).join(",")), /9 type\(s\) given/);
    refused(() => parseCompareItems("m5.xlarge,m5.xlarge=0.2"), /m5\.xlarge is given twice/);
    refused(() => parseCompareItems("m5.xlarge,,c5.large"), /an empty item/);
    refused(() => parseCompareItems("m5.xlarge,"), /an empty item/);
    refused(() => parseCompareItems(""), /--compare is empty/);
    refused(() => parseCompareItems(["m5.xlarge,c5.large", "m5.large,c5.xlarge"]), /given 2 times/);
    refused(() => parseCompareItems("M5.xlarge,c5.large"), /"M5\.xlarge" is not an EC2 instance type/);
    refused(() => parseCompareItems("m5.xlarge=-1,c5.large"), /the on-demand price "-1" is not USD per hour/);
    refused(() => parseCompareItems("m5.xlarge=,c5.large"), /the on-demand price "" is not USD per hour/);
    refused(() => parseCompareItems("m5.xlarge=0.1/x,c5.large"), /the spot price "x" is not USD per hour/);
    refused(() => parseCompareItems("m5.xlarge=0.1/0.05/0.01,c5.large"), /the spot price "0.05\/0.01"/);
    refused(() => requirePrices(parseCompareItems("m5.xlarge=0.1,c5.large"), "local"), /give every type its price \(c5\.large=USD_PER_HOUR\)/);
    expect(() => requirePrices(parseCompareItems("m5.xlarge=0.1,c5.large"), "aws")).not.to.throw();
  });

  it("refuses the flags a comparison cannot take, and --subjects without it", () => {
    const compare = "m5.xlarge=0.1,c5.large=0.2";
    refused(() => checkCompareFlags({ compare, "subjects-file": "s.txt" }), /give --subject, not --subjects-file or --all-subjects/);
    refused(() => checkCompareFlags({ compare, "all-subjects": true }), /not --subjects-file or --all-subjects/);
    refused(() => checkCompareFlags({ compare, "dry-run": true }), /cannot be a --dry-run/);
    refused(() => checkCompareFlags({ compare, "instance-type": "m5.large" }), /leave out --instance-type/);
    refused(() => checkCompareFlags({ compare, "price-per-hour": 1 }), /leave out --price-per-hour/);
    refused(() => checkCompareFlags({ compare, retries: 2 }), /leave out --retries/);
    refused(() => checkCompareFlags({ compare, subjects: 0 }), /--subjects 0: expected a whole number/);
    refused(() => checkCompareFlags({ compare, subjects: 2.5 }), /--subjects 2.5/);
    refused(() => checkCompareFlags({ subjects: 10 }), /--subjects is --compare's extrapolation/);
    expect(() => checkCompareFlags({ compare, subjects: 1000, retries: 0, "dry-run": false })).not.to.throw();
  });

  it("extrapolates to N subjects C at a time: N × cost, ceil(N / C) × wall", () => {
    expect(extrapolate(0.0123, 600, 1000, 10)).to.deep.equal({ costUsd: 12.3, wallSeconds: 60_000 });
    expect(extrapolate(0.5, 100, 5, 4)).to.deep.equal({ costUsd: 2.5, wallSeconds: 200 });
    expect(extrapolate(0.0008, 19.9, 1000, 10)).to.deep.equal({ costUsd: 0.8, wallSeconds: 1990 });
    expect(extrapolate(1, 60, 1, 4)).to.deep.equal({ costUsd: 1, wallSeconds: 60 });
  });

  it("refuses types that fit the quotas alone but not all at once", () => {
    const report = (perJob: number, quotaCode = "L-1216C47A"): CapacityReport => ({
      checked: true,
      unknown: [],
      vcpus: { quotaCode, quotaName: "Running On-Demand Standard instances", quota: 64, inUse: 16, perJob, fitsJobs: Math.floor(48 / perJob) },
      iam: { roles: { used: 10, quota: 1000, left: 990 }, instanceProfiles: { used: 10, quota: 1000, left: 990 }, fitsJobs: 990 },
    });
    expect(() => checkTypesFitTogether([{ instanceType: "m5.xlarge", report: report(4) }, { instanceType: "m5.4xlarge", report: report(16) }])).not.to.throw();
    refused(
      () => checkTypesFitTogether([{ instanceType: "m5.8xlarge", report: report(32) }, { instanceType: "m5.4xlarge", report: report(16) }, { instanceType: "m5.xlarge", report: report(4) }]),
      /need 52 vCPUs of "Running On-Demand Standard instances" \(m5\.8xlarge 32, m5\.4xlarge 16, m5\.xlarge 4\) and 48 are free now/,
    );
    // Different quotas (a GPU type beside a standard one) are counted apart.
    expect(() => checkTypesFitTogether([{ instanceType: "m5.8xlarge", report: report(32) }, { instanceType: "g5.8xlarge", report: report(32, "L-DB2E81BA") }])).not.to.throw();
    const fewRoles = { ...report(4), iam: { roles: { used: 999, quota: 1000, left: 1 }, instanceProfiles: { used: 10, quota: 1000, left: 990 }, fitsJobs: 1 } };
    refused(() => checkTypesFitTogether([{ instanceType: "m5.xlarge", report: fewRoles }, { instanceType: "c5.xlarge", report: fewRoles }]), /2 jobs need 2 IAM roles and instance profiles and 1 fit now/);
    expect(() => checkTypesFitTogether([{ instanceType: "m5.xlarge", report: { checked: false, unknown: [] } }, { instanceType: "c5.xlarge", report: { checked: false, unknown: [] } }])).not.to.throw();
  });

  it("puts each type's jobs under a prefix of its own, beside the subjects' folders", () => {
    expect(comparisonPrefix("s3://study/results", "comparison-1", "m5.xlarge")).to.equal("s3://study/results/_comparisons/comparison-1/m5.xlarge/");
    expect(comparisonPrefix("s3://study/", "c", "t3.micro")).to.equal("s3://study/_comparisons/c/t3.micro/");
  });

  it("a comparison job's instance role reaches only its own prefix: never the subject's real results, pointer or lease", () => {
    const prefix = comparisonPrefix(OUTPUT_PREFIX, "comparison-1", "m5.xlarge");
    const spec = kwykSpec({ outputs: { prefix } });
    const policy = jobPolicyDocument({ ...spec, agent: { url: `${prefix}_cloudcompute/agent/agent-x.js`, sha256: "0".repeat(64) } });
    const writable = policy.Statement.filter((s) => s.Action.some((a) => a !== "s3:GetObject")).flatMap((s) => s.Resource);
    expect(writable.length).to.be.greaterThan(0);
    for (const arn of writable) expect(arn).to.match(/^arn:aws:s3:::lab-results-bucket\/kwyk\/_comparisons\/comparison-1\/m5\.xlarge\//);
    const readable = policy.Statement.flatMap((s) => s.Resource).filter((arn) => arn.includes("lab-results-bucket/kwyk/"));
    expect(readable.filter((arn) => !arn.includes("/kwyk/_comparisons/comparison-1/m5.xlarge/")), "reaches outside the comparison").to.deep.equal([]);
  });

  it("quotes CSV fields as RFC 4180 says, numbers unformatted", () => {
    expect(csvField("plain")).to.equal("plain");
    expect(csvField(0.0008)).to.equal("0.0008");
    expect(csvField(undefined)).to.equal("");
    expect(csvField("a,b")).to.equal('"a,b"');
    expect(csvField('say "hi"')).to.equal('"say ""hi"""');
    expect(csvField("two\nlines")).to.equal('"two\nlines"');
    const csv = comparisonCsv(comparisonOf([typeRow("m5.xlarge", "succeeded", 100, 0.0123), typeRow("c5.large", "failed", 50, undefined, 'exit 3, "oom"')]));
    const lines = csv.split("\r\n");
    expect(lines).to.have.length(4); // header, two rows, the final CRLF
    expect(lines[0].split(",")).to.include.members(["instanceType", "costPerSubjectUsd", "driver_up_seconds", "agent_run_seconds"]);
    expect(lines[2]).to.include('"exit 3, ""oom"""');
    expect(lines[1]).to.include(",0.0123,");
  });

  it("niceTicks covers the maximum in round steps from 0", () => {
    expect(niceTicks(0.00084)).to.deep.equal({ ticks: [0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001], decimals: 4 });
    expect(niceTicks(17)).to.deep.equal({ ticks: [0, 5, 10, 15, 20], decimals: 0 });
    expect(niceTicks(0).ticks).to.deep.equal([0, 0.2, 0.4, 0.6, 0.8, 1]);
  });

  it("places points by wall time and cost, plots only succeeded types, and names the others", () => {
    const c = comparisonOf([typeRow("m5.xlarge", "succeeded", 600, 0.2), typeRow("c5.2xlarge", "succeeded", 300, 0.4), typeRow("m5.large", "failed", 40, undefined, "exit 1")]);
    const { points, xTicks, yTicks, left } = chartGeometry(c);
    expect(points.map((p) => p.instanceType)).to.deep.equal(["m5.xlarge", "c5.2xlarge"]);
    expect(left.map((t) => t.instanceType)).to.deep.equal(["m5.large"]);
    const xMax = xTicks.ticks[xTicks.ticks.length - 1];
    const yMax = yTicks.ticks[yTicks.ticks.length - 1];
    expect(xMax).to.be.greaterThan(10); // 10 minutes, with headroom
    expect(yMax).to.be.greaterThan(0.4);
    const plotWidth = CHART.width - CHART.left - CHART.right;
    const plotBottom = CHART.height - CHART.bottom;
    expect(points[0].x).to.be.closeTo(CHART.left + (10 / xMax) * plotWidth, 0.01);
    expect(points[1].x).to.be.closeTo(CHART.left + (5 / xMax) * plotWidth, 0.01);
    expect(points[1].y, "dearer is higher").to.be.lessThan(points[0].y);
    expect(points[0].y).to.be.closeTo(plotBottom - (0.2 / yMax) * (plotBottom - CHART.top), 0.01);
    const svg = comparisonChartSvg(c);
    expect(svg.match(/<g class="point"/g)).to.have.length(2);
    expect(svg).to.include("m5.large: failed (exit 1) — not plotted");
    expect(svg).to.include("ghcr.io/lab/seg:1 &lt;x&gt;").and.not.include("<x>");
    expect(svg).to.include("wall time per subject (minutes)").and.include("cost per subject (USD)");
    expect(svg).not.to.match(/href|<script|@import|url\(/);
  });
});

describe("run --compare: review fixes (prices, terminal, files, width, exit code)", () => {
  const report = (fitsJobs: number): CapacityReport => ({
    checked: true,
    unknown: [],
    vcpus: { quotaCode: "L-1216C47A", quotaName: "Running On-Demand Standard instances", quota: 64, inUse: 0, perJob: 64 / fitsJobs, fitsJobs },
    fitsJobs,
  });

  it("caps a given price at 1000 USD/h and never writes a cost that is not finite", () => {
    refused(() => parseCompareItems("m5.large=1e308,c5.large=0.1"), /the on-demand price 1e308 USD\/hour is more than any instance costs \(at most 1000\)/);
    refused(() => parseCompareItems("m5.large=0.1/1001,c5.large=0.1"), /the spot price 1001 USD\/hour/);
    expect(parseCompareItems("m5.large=1000,c5.large=0.1")[0].onDemandUsdPerHour).to.equal(1000);
    expect(costAt(3600, { usdPerHour: Number.MAX_VALUE, source: "--compare", asOf: "2026-11-29" }, undefined)).to.equal(undefined);
    expect(costAt(3600, { usdPerHour: 0.5, source: "--compare", asOf: "2026-11-29" }, undefined)).to.equal(0.5);
  });

  it("refuses --time-budget, --engine-concurrency with --compare, and --wide without it", () => {
    const compare = "m5.xlarge=0.1,c5.large=0.2";
    refused(() => checkCompareFlags({ compare, "time-budget": 60 }), /a config's instanceType, auto or not, is ignored\): leave out --time-budget/);
    refused(() => checkCompareFlags({ compare, "engine-concurrency": 2 }), /leave out --engine-concurrency/);
    refused(() => checkCompareFlags({ wide: true }), /--wide is --compare's table/);
    expect(() => checkCompareFlags({ compare, wide: true })).not.to.throw();
  });

  it("keeps control characters off the terminal and out of the SVG; guards CSV cells against formulas", () => {
    const c = { ...comparisonOf([typeRow("m5.xlarge", "succeeded", 100, 0.01), typeRow("c5.large", "failed", 50, undefined, "exit 1\x1b[2J")]), image: "lab/seg\x1b]0;pwned\x07:1\x00" };
    const text = comparisonTable(c, { concurrencyGiven: false });
    expect(text).not.to.match(/[\x00-\x08\x0b-\x1f\x7f]/);
    expect(text).to.include("lab/seg?]0;pwned?:1?").and.include("c5.large failed: exit 1?[2J");
    const svg = comparisonChartSvg(c);
    expect(svg).not.to.match(/[\x00-\x08\x0b\x0c\x0e-\x1f]/);
    expect(svg).to.include("lab/seg]0;pwned:1");
    expect(csvField("=HYPERLINK(\"http://x\")")).to.equal("\"'=HYPERLINK(\"\"http://x\"\")\"");
    for (const cell of ["+1", "-1+2", "@SUM(A1)", "\tx"]) expect(csvField(cell)).to.equal(`'${cell}`);
    expect(csvField(-1)).to.equal("-1");
    expect(comparisonCsv(comparisonOf([typeRow("m5.xlarge", "failed", 10, undefined, "=1+1")]))).to.include(",'=1+1,");
  });

  it("keeps the table within 120 columns for 3 types with --subjects; each phase's time only with --wide", () => {
    const reason = "the container exited with status 137 after the kernel killed it for using too much memory (oom)";
    const c: Comparison = {
      ...comparisonOf([typeRow("m5.xlarge", "succeeded", 4000, 0.2123), typeRow("c5.2xlarge", "succeeded", 3000, 0.3345), typeRow("m5.24xlarge", "interrupted", 50, undefined, reason)]),
      image: `123456789012.dkr.ecr.us-east-1.amazonaws.com/lab/segmentation@sha256:${"a".repeat(64)}`,
      subjects: 10000,
      concurrency: 100,
    };
    c.types = c.types.map((t) => (t.costPerSubjectUsd === undefined ? t : { ...t, phases: { driver: { up: 61, destroy: 40, total: t.wallSeconds }, agent: { inputs: 300, pull: 30, run: 2000, outputs: 100 } }, onDemandUsd: 1234.5678, spotUsd: 321.1234, batch: { costUsd: 123456.78, wallSeconds: 400000 } }));
    c.assumptions = extrapolationAssumptions(c);
    const narrow = comparisonTable(c, { concurrencyGiven: true });
    for (const line of narrow.split("\n")) expect(line.length, line).to.be.at.most(TABLE_WIDTH);
    expect(narrow).not.to.include("DESTROY").and.not.include("INPUTS");
    expect(narrow).to.include("10000 SUBJECTS").and.include("add --wide");
    expect(narrow.replace(/\n +/g, " "), "the reason in full, wrapped").to.include(reason);
    expect(narrow).to.include("every subject is assumed to take and cost what sub-01 did").and.include("measured with 3 Pulumi engines at once on this machine");
    const wide = comparisonTable(c, { concurrencyGiven: true, wide: true });
    expect(wide.split("\n")[0]).to.match(/WALL\s+UP\s+INPUTS\s+PULL\s+RUN\s+OUTPUTS\s+DESTROY\s+BILLED/);
  });

  it("says the assumptions, and what the quotas would cap C jobs at once to (aws)", () => {
    expect(batchConcurrency(report(8), 4, 1000)).to.deep.equal({ concurrency: 4 });
    const capped = batchConcurrency(report(2), 10, 1000);
    expect(capped.concurrency).to.equal(2);
    expect(capped.capped).to.match(/concurrency capped to 2 \(asked 10\)/);
    const aws = { subject: "sub-01", subjects: 1000, concurrency: 10, platform: "aws", types: [{ instanceType: "m5.24xlarge", batch: { capped: capped.capped } }, { instanceType: "m5.large" }] };
    expect(extrapolationAssumptions(aws)[1]).to.match(/^10 jobs at once must fit the account's quotas, checked now as a batch would: m5\.24xlarge: concurrency capped to 2/);
    expect(extrapolationAssumptions({ ...aws, types: [{ instanceType: "m5.large" }] })[1]).to.match(/they fit$/);
    expect(extrapolationAssumptions({ ...aws, platform: "local" })[1]).to.match(/not checked on --platform local/);
  });

  it("a type's batch uses the jobs at once the quotas allow, and says so", () => {
    const result = { jobId: "job-1", subject: "sub-01", platform: "aws", outcome: "succeeded", exitCode: 0, message: "", resultsUrl: "", markerUrl: "", logUrl: "", timings: { driver: { up: 5, total: 100 }, agent: { run: 80 } }, attempts: [], billedSeconds: 92 } as unknown as JobResult;
    const prices = { onDemand: { usdPerHour: 3.6, source: "--compare" as const, asOf: "2026-11-29" } };
    const capped = comparedType(result, "m5.24xlarge", prices, false, { subjects: 10, concurrency: 2, capped: "concurrency capped to 2 (asked 5)" });
    expect(capped.costPerSubjectUsd).to.equal(0.092);
    expect(capped.batch).to.deep.equal({ costUsd: 0.92, wallSeconds: 500, concurrency: 2, capped: "concurrency capped to 2 (asked 5)" });
    expect(comparedType(result, "m5.large", prices, false, { subjects: 10, concurrency: 5 }).batch).to.deep.equal({ costUsd: 0.92, wallSeconds: 200 });
    const unpriceable = comparedType(result, "m5.large", { onDemand: { ...prices.onDemand, usdPerHour: Number.MAX_VALUE } }, false, { subjects: 10, concurrency: 5 });
    expect(unpriceable).not.to.have.any.keys("onDemandUsd", "costPerSubjectUsd", "batch");
    expect(JSON.stringify(unpriceable)).not.to.include("null");
  });

  it("gives comparisons started in the same millisecond different ids that saved files still accept", () => {
    const at = new Date("2026-11-29T15:48:00.123Z");
    const ids = new Set(Array.from({ length: 50 }, () => makeComparisonId(at)));
    expect(ids.size).to.equal(50);
    const id = [...ids][0];
    expect(id).to.match(/^comparison-20261129T154800123Z-[a-z0-9]+-[0-9a-f]{6}$/);
    const base = comparisonOf([typeRow("m5.xlarge", "succeeded", 100, 0.01)]);
    const c = { ...base, key: comparisonKey(base.image, base.command), comparisonId: id, spot: true };
    expect(parseComparison(JSON.stringify(c), id)).to.deep.equal(c);
    const { spot: _spot, ...older } = c;
    expect(parseComparison(JSON.stringify(older), id), "a file written before spot was recorded").to.deep.equal(older);
  });

  it("saves through unique new files, and reports a failed save instead of throwing", () => {
    const saved = process.env.CLOUDCOMPUTE_HOME;
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "cc-compare-save-"));
    try {
      process.env.CLOUDCOMPUTE_HOME = home;
      const c = comparisonOf([typeRow("m5.xlarge", "succeeded", 100, 0.01)]);
      const ok = saveComparison(c);
      expect(ok).to.have.property("files");
      expect(fs.readdirSync(path.join(home, "comparisons", c.comparisonId)).sort()).to.deep.equal(["chart.svg", "comparison.csv", "comparison.json"]);
      fs.writeFileSync(path.join(home, "blocked"), "");
      process.env.CLOUDCOMPUTE_HOME = path.join(home, "blocked");
      const failed = saveComparison(c);
      expect(failed).to.have.property("error").that.matches(/ENOTDIR|EEXIST/);
    } finally {
      process.env.CLOUDCOMPUTE_HOME = saved;
      if (saved === undefined) delete process.env.CLOUDCOMPUTE_HOME;
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it("exits 130 when interrupted, 3 when the comparison was not saved, 1 when a type failed, else 0", () => {
    expect(compareExitCode(["interrupted", "succeeded"], true, false)).to.equal(130);
    expect(compareExitCode(["succeeded", "succeeded"], false, false)).to.equal(3);
    expect(compareExitCode(["failed", "succeeded"], false, false)).to.equal(3);
    expect(compareExitCode(["failed", "succeeded"], false, true)).to.equal(1);
    expect(compareExitCode(["succeeded", "succeeded"], false, true)).to.equal(0);
  });
});
