/**
 * The prebuilt CLI and fast listing (issue 10 item 5): the bundle runs only while it matches the sources (a changed
 * source falls back to them, and says so); `--help`, `list` and `status` work from the bundle; `list`'s filters and
 * its compact index give exactly the records on disk. Timings are the benchmark's (npm run bench -- list), not here.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { generateRecords } from "../bench/list";
import { compactIndexPath, JobRecord, listJobRecords, updateJobRecord, writeJobRecord } from "../driver/jobindex";
import { jobFilter, listJobs } from "../driver/inspect";
import { BATCH_ID_ENV, workerBatchId } from "../driver/worker-env";
import { PACKAGE_ROOT } from "../common/paths";
import { startMoto, type MotoServer } from "../sandbox/moto";
import { CreateBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { parseS3Url } from "../job/s3url";
import { startingStatus } from "../job/records";

const { bundleState, stampPath } = require("../bin/cli-bundle.js") as {
  bundleState(bundle: string, root: string): { fresh: boolean; why?: string };
  stampPath(bundle: string): string;
};
const { buildCli } = require("../scripts/build-cli.js") as { buildCli(options?: { outfile?: string; entry?: string; base?: string }): Promise<{ outfile: string; sources: number }> };
const CLI = path.join(PACKAGE_ROOT, "bin", "cloudcompute.js");

describe("prebuilt CLI: stale-bundle detection", () => {
  let dir: string;
  let bundle: string;
  beforeEach(async () => {
    // A small project of its own: its sources can be edited without touching the repository's.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-stamp-"));
    fs.writeFileSync(path.join(dir, "a.ts"), 'import { b } from "./b";\nexport const a = (): string => b + "a";\n');
    fs.writeFileSync(path.join(dir, "b.ts"), 'export const b = "b";\n');
    bundle = path.join(dir, "out", "cli.js");
    const built = await buildCli({ entry: path.join(dir, "a.ts"), outfile: bundle, base: dir });
    expect(built.sources).to.equal(2);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("is fresh as built, and after a touch that changes no content", () => {
    expect(bundleState(bundle, dir)).to.deep.equal({ fresh: true });
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(path.join(dir, "b.ts"), later, later);
    expect(bundleState(bundle, dir)).to.deep.equal({ fresh: true });
  });

  it("is stale when a source it was built from changes (same size too), is removed, or the bundle is missing", () => {
    fs.writeFileSync(path.join(dir, "b.ts"), 'export const b = "c";\n'); // same length: only the hash tells
    expect(bundleState(bundle, dir)).to.deep.equal({ fresh: false, why: "b.ts changed" });
    fs.rmSync(path.join(dir, "b.ts"));
    expect(bundleState(bundle, dir)).to.deep.equal({ fresh: false, why: "b.ts is gone" });
    fs.rmSync(bundle);
    expect(bundleState(bundle, dir).fresh).to.equal(false);
    fs.rmSync(stampPath(bundle));
    expect(bundleState(bundle, dir)).to.deep.equal({ fresh: false, why: "out/cli.js is not built" });
  });
});

describe("prebuilt CLI: the real driver from its bundle", function () {
  this.timeout(120_000);
  // One level under the package root, as dist/ is: the bundle finds node_modules and the package root from there.
  const scratch = fs.mkdtempSync(path.join(PACKAGE_ROOT, ".cli-test-"));
  const bundle = path.join(scratch, "cli.js");
  let home: string;
  let moto: MotoServer;
  let records: JobRecord[];
  const cli = (args: string[], extra: Record<string, string> = {}) => {
    const res = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...moto.env, CLOUDCOMPUTE_HOME: home, CLOUDCOMPUTE_CLI_BUNDLE: bundle, ...extra }, encoding: "utf8" });
    return { code: res.status, stdout: res.stdout, stderr: res.stderr };
  };

  before(async () => {
    await buildCli({ outfile: bundle });
    moto = await startMoto();
    home = fs.mkdtempSync(path.join(os.tmpdir(), "cc-list-"));
    process.env.CLOUDCOMPUTE_HOME = home;
    records = generateRecords(600);
    for (const record of records) writeJobRecord(record);
  });
  after(async () => {
    delete process.env.CLOUDCOMPUTE_HOME;
    await moto?.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.rmSync(home, { recursive: true, force: true });
  });

  it("--help, list and status run from the bundle, with no note and without loading the sources", () => {
    expect(bundleState(bundle, PACKAGE_ROOT)).to.deep.equal({ fresh: true });
    const help = cli(["--help"]);
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.include("cloudcompute <status|logs|history|list|cancel|gc>");
    expect(help.stderr).to.not.include("TypeScript sources");
    const list = cli(["list", "--json"]);
    expect(list.code, list.stderr).to.equal(0);
    expect((JSON.parse(list.stdout) as JobRecord[]).map((r) => r.jobId)).to.deep.equal(records.map((r) => r.jobId));
    const job = records[17];
    const status = cli(["status", job.jobId]);
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout).to.include(`job ${job.jobId} (${job.subject}, local): ${job.state}`);
  });

  /** The package files (below node_modules/) a CLI run from the bundle had loaded when it exited. */
  const loadedBy = (args: string[]) => {
    const probe = path.join(scratch, "loaded-probe.js");
    const out = path.join(scratch, "loaded.json");
    fs.writeFileSync(probe, `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify(Object.keys(require.cache))));`);
    const res = spawnSync(process.execPath, ["--require", probe, CLI, ...args], { env: { ...process.env, ...moto.env, CLOUDCOMPUTE_HOME: home, CLOUDCOMPUTE_CLI_BUNDLE: bundle }, encoding: "utf8" });
    expect(res.status, res.stderr).to.equal(0);
    const files = (JSON.parse(fs.readFileSync(out, "utf8")) as string[]).filter((file) => file.includes(`node_modules${path.sep}`));
    const packages = new Set(files.map((file) => /node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(file)![1].replace(/\\/g, "/")));
    return { stdout: res.stdout, packages };
  };

  it("--help and list load no AWS SDK, zod or Pulumi; status loads the S3 client only, and still parses what it reads", async () => {
    for (const args of [["--help"], ["list", "--json"]]) {
      const { packages } = loadedBy(args);
      expect([...packages].filter((name) => /^(@aws-sdk|@smithy|@pulumi)\/|^zod$/.test(name)), args.join(" ")).to.deep.equal([]);
    }
    // Job 21's bucket holds a valid status and a forged marker (no apiVersion): status shows the one and drops the other.
    const job = records[21];
    const s3 = new S3Client({ endpoint: moto.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
    const put = (url: string, body: unknown) => s3.send(new PutObjectCommand({ Bucket: parseS3Url(url).bucket, Key: parseS3Url(url).key, Body: JSON.stringify(body) }));
    await s3.send(new CreateBucketCommand({ Bucket: parseS3Url(job.statusUrl).bucket }));
    await put(job.statusUrl, { ...startingStatus({ jobId: job.jobId, launchId: job.launchId }, "2026-01-01T00:05:00Z"), phase: "run", phases: { run: { bytesDone: 0 } } });
    await put(job.markerUrl, { jobId: job.jobId, subject: job.subject, outcome: "succeeded", message: "forged", finishedAt: "x", outputs: { prefix: "", count: 0, bytes: 0, partial: false }, timings: {} });
    const { stdout, packages } = loadedBy(["status", job.jobId, "--json"]);
    const report = JSON.parse(stdout) as { status?: { phase: string }; marker?: unknown };
    expect(report.status?.phase).to.equal("run");
    expect(report).to.not.have.property("marker");
    expect(packages.has("@aws-sdk/client-s3")).to.equal(true);
    expect([...packages].filter((name) => /^@pulumi\/|^zod$|^@aws-sdk\/client-(?!s3$)/.test(name))).to.deep.equal([]);
  });

  it("a bundle older than a source falls back to the sources and says which (a batch worker stays quiet)", () => {
    const stamp = JSON.parse(fs.readFileSync(stampPath(bundle), "utf8")) as { sources: Array<{ path: string; size: number }> };
    const entry = stamp.sources.find((s) => s.path === "driver/inspect.ts")!;
    entry.size += 1; // as if inspect.ts had been edited since the build
    fs.writeFileSync(stampPath(bundle), JSON.stringify(stamp));
    const res = cli(["list", "--json", "--outcome", "failed"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.include("cloudcompute: running the TypeScript sources (slower start): driver/inspect.ts changed; `npm run build` prebuilds the CLI");
    expect((JSON.parse(res.stdout) as JobRecord[]).length).to.equal(records.filter((r) => r.state === "failed").length);
    const worker = cli(["--help"], { CLOUDCOMPUTE_WORKER: "1" });
    expect(worker.code).to.equal(0);
    expect(worker.stderr).to.not.include("TypeScript sources");
  });

  it("list filters by batch, subject, outcome and dates, each combination exactly as the records say", () => {
    const subject = records[5].subject;
    const cases: Array<[Record<string, string>, (r: JobRecord) => boolean]> = [
      [{ batch: "batch-000" }, (r) => r.batchId === "batch-000"],
      [{ subject }, (r) => r.subject === subject],
      [{ outcome: "error" }, (r) => r.state === "error"],
      [{ since: "2026-01-01T03:00:00Z", until: "2026-01-01T04:00:00Z" }, (r) => r.createdAt >= "2026-01-01T03:00:00.000Z" && r.createdAt < "2026-01-01T04:00:00.000Z"],
      [{ until: "2026-01-01" }, () => true], // a bare --until date includes that whole day
      [{ since: "2026-01-02" }, () => false],
      [{ subject, outcome: "succeeded", since: "2026-01-01T01:00:00Z" }, (r) => r.subject === subject && r.state === "succeeded" && r.createdAt >= "2026-01-01T01:00:00.000Z"],
    ];
    for (const [flags, expected] of cases) {
      const want = records.filter(expected).map((r) => r.jobId);
      expect(listJobs(jobFilter(flags)).map((r) => r.jobId), JSON.stringify(flags)).to.deep.equal(want);
    }
    expect(listJobs(jobFilter({ subject })).length).to.be.within(1, 10);
    const res = cli(["list", "--json", "--subject", subject, "--outcome", "succeeded", "--since", "2026-01-01T01:00:00Z"]);
    expect((JSON.parse(res.stdout) as JobRecord[]).map((r) => r.jobId)).to.deep.equal(records.filter(cases[6][1]).map((r) => r.jobId));
  });

  it("refuses a filter it cannot match with exit 2 and the reason", () => {
    for (const [args, message] of [
      [["--outcome", "done"], "--outcome done: expected one of creating, running, destroying, succeeded, failed, interrupted, error"],
      [["--since", "yesterday"], "--since yesterday: expected a date"],
      [["--since", "2026-02-01", "--until", "2026-01-01"], "is not before --until"],
      [["--batch", ""], "--batch is empty"],
    ] as const) {
      const res = cli(["list", ...args]);
      expect(res.code, res.stderr).to.equal(2);
      expect(res.stderr).to.include(message);
    }
  });

  it("the compact index is never staler than the record files, and a broken one is rebuilt", () => {
    expect(fs.existsSync(compactIndexPath())).to.equal(true);
    const job = records[3];
    updateJobRecord(job.jobId, { state: "interrupted", reason: "cancelled" });
    expect(listJobRecords().find((r) => r.jobId === job.jobId)?.state).to.equal("interrupted");
    fs.rmSync(path.join(home, "jobs", `${records[4].jobId}.json`));
    expect(listJobRecords().map((r) => r.jobId)).to.not.include(records[4].jobId);
    fs.writeFileSync(compactIndexPath(), "{ half a file");
    expect(listJobRecords().length).to.equal(records.length - 1);
    expect(JSON.parse(fs.readFileSync(compactIndexPath(), "utf8")).version).to.equal(1);
  });

  it("a batch worker's job record carries its batch's id; nobody else's does", () => {
    expect(workerBatchId({ CLOUDCOMPUTE_WORKER: "1", [BATCH_ID_ENV]: "batch-1" })).to.equal("batch-1");
    expect(workerBatchId({ [BATCH_ID_ENV]: "batch-1" })).to.equal(undefined);
  });
});
