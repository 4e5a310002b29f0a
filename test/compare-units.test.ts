/**
 * `run --compare`'s pure parts: the items parser and the flags it refuses, the batch extrapolation, the CSV's
 * RFC 4180 quoting and the chart's geometry. The whole command runs end to end in test/compare.test.ts.
 */
import { expect } from "chai";
import { COMPARISON_KIND, COMPARISON_VERSION, type Comparison, type ComparedType } from "../job/comparison";
import { comparisonPrefix } from "../job/layout";
import { checkCompareFlags, checkTypesFitTogether, extrapolate, parseCompareItems, requirePrices } from "../driver/compare-items";
import type { CapacityReport } from "../driver/quotas";
import { comparisonCsv, csvField } from "../driver/comparison-output";
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
