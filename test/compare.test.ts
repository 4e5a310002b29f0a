/**
 * `run --compare` end to end: the real CLI, the real Pulumi engine with `--platform local`, a moto S3 server and the
 * agent running the job's command as a host process (runtime none: the compared thing is the driver, not a
 * container). Three types at made-up prices run at once; the Comparison, its CSV and chart, the subject's real
 * results (untouched) and the stacks (emptied) are checked; then a Ctrl-C tears every type's job down, and a second
 * one leaves at once naming every type's job to cancel.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { Comparison } from "../job/comparison";
import { roundUsd } from "../job/pricing";
import { findSuccess } from "../driver/batch";
import { dumpDom, screenshot } from "./support/chromium";
import type { JobRecord } from "../driver/jobindex";
import { type CliResult, DriverSandbox, localJobConfig, processesIn, startDriverSandbox, waitForRecord } from "../sandbox/driver-sandbox";

/** RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") row.push(field), (field = "");
    else if (ch === "\r" && text[i + 1] === "\n") {
      row.push(field), rows.push(row), (row = []), (field = ""), i++;
    } else field += ch;
  }
  if (field !== "" || row.length > 0) row.push(field), rows.push(row);
  return rows;
}

describe("run --compare (real Pulumi engine, local platform, moto)", function () {
  this.timeout(10 * 60_000);
  const SUBJECT = "NDARINV0000CMPA";
  const PRICES: Record<string, number> = { "m5.xlarge": 0.1, "c5.2xlarge": 0.2, "m5.4xlarge": 0.4 };
  const compareArg = Object.entries(PRICES).map(([type, usd]) => `${type}=${usd}`).join(",");
  let sandbox: DriverSandbox;
  let config: string;
  let slowConfig: string;

  const keysUnder = async (prefix: string) => {
    const page = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: prefix }));
    return (page.Contents ?? []).map((o) => o.Key!);
  };

  before(async () => {
    sandbox = await startDriverSandbox();
    await sandbox.seed([SUBJECT]);
    const container = (script: string) => ({ image: "none", runtime: "none", command: ["sh", "-c", script, "sh", "{input}", "{output}", "{subject}"] });
    // instanceType auto in the config: --compare sets each job's type, so it neither asks for --time-budget nor refuses.
    config = sandbox.writeConfig("Pulumi.compare.yaml", { ...localJobConfig(sandbox, container('sleep 1; cp "$1" "$2/$3_T1w_copy.nii"')), "cloudcompute:instanceType": "auto" });
    slowConfig = sandbox.writeConfig("Pulumi.slow.yaml", localJobConfig(sandbox, container("sleep 300")));
  });

  after(async () => {
    await sandbox?.stop();
  });

  it("refuses bad --compare input with exit 2 before any stack exists", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["--compare", "m5.xlarge,c5.2xlarge"], /on --platform local: give every type its price \(m5\.xlarge=USD_PER_HOUR, c5\.2xlarge=USD_PER_HOUR\)/],
      [["--compare", "m5.xlarge=0.1,m5.xlarge=0.2"], /m5\.xlarge is given twice/],
      [["--compare", "m5xlarge=0.1,c5.large=0.2"], /"m5xlarge" is not an EC2 instance type/],
      [["--compare", "m5.xlarge=0.1"], /1 type\(s\) given; compare 2 to 8 types/],
      [["--compare", "m5.xlarge=abc,c5.large=0.2"], /the on-demand price "abc" is not USD per hour/],
      [["--compare", compareArg, "--dry-run"], /--compare cannot be a --dry-run/],
      [["--compare", compareArg, "--instance-type", "m5.large"], /leave out --instance-type/],
      [["--compare", compareArg, "--time-budget", "60"], /leave out --time-budget/],
      [["--compare", compareArg, "--engine-concurrency", "2"], /leave out --engine-concurrency/],
      [["--compare", "m5.xlarge=1e308,c5.large=0.2"], /the on-demand price 1e308 USD\/hour is more than any instance costs \(at most 1000\)/],
      [["--wide"], /--wide is --compare's table/],
      [["--subjects", "10"], /--subjects is --compare's extrapolation/],
    ];
    for (const [args, message] of cases) {
      const res = await sandbox.run(["--config", config, "--subject", SUBJECT, ...args]);
      expect(res.code, `${args.join(" ")}: ${res.stderr}`).to.equal(2);
      expect(res.stderr).to.match(message);
    }
    expect(fs.existsSync(path.join(sandbox.home, "state", ".pulumi", "stacks")), "stacks created").to.equal(false);
    expect(fs.existsSync(path.join(sandbox.home, "jobs")), "jobs recorded").to.equal(false);
  });

  it("runs the subject on three types at once: the Comparison, its CSV and chart, the subject's real results untouched", async () => {
    const res = await sandbox.run(["--config", config, "--subject", SUBJECT, "--compare", compareArg, "--subjects", "1000", "--concurrency", "10", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const comparison = JSON.parse(res.stdout) as Comparison;
    expect(comparison.kind).to.equal("cloudcompute-comparison");
    expect(comparison.subject).to.equal(SUBJECT);
    expect([comparison.subjects, comparison.concurrency]).to.deep.equal([1000, 10]);
    expect(comparison.spot).to.equal(false);
    expect(comparison.assumptions).to.have.length(3);
    expect(comparison.assumptions![0]).to.equal(`every subject is assumed to take and cost what ${SUBJECT} did on each type`);
    expect(comparison.assumptions![1]).to.match(/10 jobs at once must fit the account's quotas: not checked on --platform local/);
    expect(comparison.types.map((t) => t.instanceType)).to.deep.equal(Object.keys(PRICES));
    const jobIds = comparison.types.map((t) => t.jobId);
    expect(new Set(jobIds).size).to.equal(3);
    for (const t of comparison.types) {
      expect(t.outcome, t.reason).to.equal("succeeded");
      expect(t.billedSeconds).to.be.greaterThan(0);
      expect(t.onDemandPrice).to.include({ usdPerHour: PRICES[t.instanceType], source: "--compare" });
      expect(t.costPerSubjectUsd).to.equal(roundUsd((t.billedSeconds! * PRICES[t.instanceType]) / 3600));
      expect(t.phases.agent).to.include.keys("run");
      expect(t.phases.driver).to.include.keys("up", "destroy", "total");
      expect(t.wallSeconds).to.equal(t.phases.driver.total);
      expect(t.batch).to.deep.equal({ costUsd: roundUsd(t.costPerSubjectUsd! * 1000), wallSeconds: Math.round(100 * t.wallSeconds * 1000) / 1000 });
      expect(sandbox.stackResources(t.jobId), `${t.jobId} resources`).to.equal(0);
    }
    // The three ran at once: each started before any of the others ended.
    const records = sandbox.records().filter((r) => jobIds.includes(r.jobId));
    expect(records).to.have.length(3);
    const lastStart = Math.max(...records.map((r) => Date.parse(r.runningAt!)));
    const firstEnd = Math.min(...records.map((r) => Date.parse(r.endedAt!)));
    expect(lastStart).to.be.lessThan(firstEnd);
    expect(res.stderr).to.include("1000 SUBJECTS").and.include("ceil(1000 / 10)");

    const dir = path.join(sandbox.home, "comparisons", comparison.comparisonId);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "comparison.json"), "utf8"))).to.deep.equal(comparison);
    const [header, ...rows] = parseCsv(fs.readFileSync(path.join(dir, "comparison.csv"), "utf8"));
    expect(rows).to.have.length(3);
    const column = (name: string) => rows.map((row) => row[header.indexOf(name)]);
    expect(column("instanceType")).to.deep.equal(Object.keys(PRICES));
    expect(column("costPerSubjectUsd").map(Number)).to.deep.equal(comparison.types.map((t) => t.costPerSubjectUsd));
    expect(column("billedSeconds").map(Number)).to.deep.equal(comparison.types.map((t) => t.billedSeconds));
    expect(column("batchCostUsd").map(Number)).to.deep.equal(comparison.types.map((t) => t.batch!.costUsd));
    expect(column("batchWallSeconds").map(Number)).to.deep.equal(comparison.types.map((t) => t.batch!.wallSeconds));

    const svg = fs.readFileSync(path.join(dir, "chart.svg"), "utf8");
    const points = [...svg.matchAll(/<g class="point" data-type="([^"]+)" data-usd="([^"]+)"[^>]*>\s*<circle cx="([^"]+)" cy="([^"]+)"/g)].map((m) => ({ type: m[1], usd: Number(m[2]), cy: Number(m[4]) }));
    expect(points.map((p) => p.type).sort()).to.deep.equal(Object.keys(PRICES).sort());
    const costs = [...comparison.types.map((t) => t.costPerSubjectUsd!)].sort((a, b) => a - b);
    expect(points.map((p) => p.usd), "points ordered by cost").to.deep.equal(costs);
    for (let i = 1; i < points.length; i++) expect(points[i].cy, "a dearer point sits higher").to.be.at.most(points[i - 1].cy);
    expect(svg).to.include(`subject ${SUBJECT}`);
    // In a real browser: the chart renders as an SVG document with its three points, and a screenshot of it is kept.
    const dom = dumpDom(path.join(dir, "chart.svg"));
    expect(dom).to.match(/^\s*(<\?xml[^>]*>\s*)?<svg/);
    expect([...dom.matchAll(/<g class="point"/g)]).to.have.length(3);
    const shot = path.join(os.tmpdir(), "cloudcompute-chart-screenshot.png");
    screenshot(path.join(dir, "chart.svg"), shot, 900, 650);
    expect(fs.readFileSync(shot).subarray(0, 8).toString("hex"), "a PNG").to.equal("89504e470d0a1a0a");
    expect(fs.statSync(shot).size, "more than a blank page").to.be.greaterThan(10_000);
    process.stderr.write(`      chart screenshot: ${shot}\n`);

    // Each type's results are under the comparison's own prefix; the subject's real results, pointer and lease are not touched.
    for (const t of comparison.types) {
      expect(await keysUnder(`results/_comparisons/${comparison.comparisonId}/${t.instanceType}/${SUBJECT}/`)).to.include(`results/_comparisons/${comparison.comparisonId}/${t.instanceType}/${SUBJECT}/${SUBJECT}_T1w_copy.nii`);
    }
    const outside = (await keysUnder("results/")).filter((key) => !key.startsWith("results/_comparisons/"));
    expect(outside, "objects outside the comparison's prefix").to.deep.equal([]);
    // A batch would still run the subject: the look a batch takes for an earlier success finds none.
    const saved = { ...process.env };
    Object.assign(process.env, sandbox.moto.env);
    try {
      expect(await findSuccess(`s3://${sandbox.bucket}/results`, SUBJECT)).to.equal(undefined);
    } finally {
      for (const key of Object.keys(sandbox.moto.env)) if (saved[key] === undefined) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });

  /** The slow comparison of m5.large and c5.large started, once both types' jobs run; its process group. */
  async function slowComparisonRunning(): Promise<{ run: Promise<CliResult>; group: number; records: JobRecord[] }> {
    let group = 0;
    const started = Date.now();
    const run = sandbox.run(["--config", slowConfig, "--subject", SUBJECT, "--compare", "m5.large=0.1,c5.large=0.2"], { detached: true, onSpawn: (child) => (group = child.pid!) });
    const running = (type: string) => waitForRecord(sandbox, (r) => r.jobId.includes(`-${type}-`) && r.state === "running" && Date.parse(r.createdAt) >= started - 1000, `${type} running`, 300_000);
    return { run, group, records: [await running("m5.large"), await running("c5.large")] };
  }

  it("a Ctrl-C tears every type's job down: exit 130, the table on stdout, no stack keeps resources, no agent left", async () => {
    const { run, group, records } = await slowComparisonRunning();
    process.kill(-group, "SIGINT");
    const res = await run;
    expect(res.code, res.stderr).to.equal(130);
    // Without --json the table is the output, on stdout; progress stays on stderr.
    const table = res.stdout.split("\n");
    expect(table.find((line) => line.startsWith("TYPE "))).to.match(/^TYPE\s+OUTCOME\s+WALL\s+BILLED/);
    for (const type of ["m5.large", "c5.large"]) expect(table.some((line) => new RegExp(`^${type.replace(".", "\\.")}\\s+interrupted\\s`).test(line)), res.stdout).to.equal(true);
    for (const line of table) expect(line.length, line).to.be.at.most(120);
    const id = /^comparison (comparison-\S+):/m.exec(res.stdout)![1];
    const comparison = JSON.parse(fs.readFileSync(path.join(sandbox.home, "comparisons", id, "comparison.json"), "utf8")) as Comparison;
    expect(comparison.types.map((t) => t.outcome)).to.deep.equal(["interrupted", "interrupted"]);
    for (const record of records) {
      expect(sandbox.stackResources(record.jobId), `${record.jobId} resources`).to.equal(0);
      expect(processesIn(path.join(sandbox.home, "local", record.jobId)), `${record.jobId} processes`).to.deep.equal([]);
    }
  });

  it("a second Ctrl-C leaves at once naming every type's job to cancel; cancelling each leaves nothing", async () => {
    const { run, group, records } = await slowComparisonRunning();
    process.kill(-group, "SIGINT");
    // Past the window in which copies of one Ctrl-C count as one (driver/cli.ts): a deliberate second one.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    process.kill(-group, "SIGINT");
    const res = await run;
    // Cancelled whatever the hint says, so that a failure here leaves no job running.
    const cancelled: CliResult[] = [];
    for (const record of records) cancelled.push(await sandbox.run(["cancel", record.jobId]));
    // The engines the driver left behind leave their provider plugins running (as a single run's "leave now" does):
    // stopped here, not checked.
    for (const record of records) for (const pid of processesIn(path.join(sandbox.home, "work", record.jobId))) process.kill(pid, "SIGKILL");
    expect(res.code, res.stderr).to.equal(130);
    expect(res.stderr).to.include("leaving now. Resources may remain; clean up with:");
    for (const record of records) expect(res.stderr).to.include(`npm run job -- cancel ${record.jobId}`);
    records.forEach((record, i) => {
      expect(cancelled[i].code, cancelled[i].stderr).to.equal(0);
      expect(sandbox.stackResources(record.jobId), `${record.jobId} resources`).to.equal(0);
      expect(processesIn(path.join(sandbox.home, "local", record.jobId)), `${record.jobId} processes`).to.deep.equal([]);
    });
  });
});
