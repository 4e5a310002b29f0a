/**
 * The driver end to end, with every part real: the Pulumi engine (CLI built by scripts/pulumi-cli.sh), a moto S3
 * server, the agent bundle built from source, podman + runc running a busybox image pulled from a local registry.
 * Each job goes through the `--platform local` stack lifecycle (LocalJob starts the agent as a local process).
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { JobRecord } from "../driver/jobindex";
import type { JobResult } from "../driver/run";
import { podmanAvailable, podmanTestEnv } from "../sandbox/podman";
import { DriverSandbox, localJobConfig, processAlive, startDriverSandbox, batchResultOf } from "../sandbox/driver-sandbox";

describe("driver end to end (real Pulumi engine, moto, podman)", function () {
  this.timeout(15 * 60_000);
  let sandbox: DriverSandbox;
  let image: string;
  const SUBJECTS = ["NDARINV0000AAAA", "NDARINV0000BBBB", "NDARINV0000CCCC", "NDARINV0000DDDD", "NDARINV0000EEEE"];
  const allJobIds: string[] = [];

  const stackResources = (jobId: string) => sandbox.stackResources(jobId);
  const stackHistory = (jobId: string) => sandbox.stackHistory(jobId);
  const stackExists = (jobId: string) => fs.existsSync(path.join(sandbox.home, "state", ".pulumi", "stacks", "cloudcompute", `${jobId}.json`));
  const record = (jobId: string) => JSON.parse(fs.readFileSync(path.join(sandbox.home, "jobs", `${jobId}.json`), "utf8")) as JobRecord;
  const agentPid = (jobId: string) => Number(/^local:(\d+):/.exec(record(jobId).instanceId ?? "")?.[1]);
  const containersOf = (jobId: string) =>
    spawnSync("podman", ["ps", "-a", "--filter", `name=cloudcompute-${jobId}`, "--format", "{{.Names}}"], { encoding: "utf8" }).stdout.trim();
  const s3Text = async (key: string) =>
    (await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: key }))).Body!.transformToString()) as string;

  /** Assert the job left nothing behind: empty stack with its history, no agent process, no container. */
  function expectCleanedUp(jobId: string): void {
    expect(stackResources(jobId), "resources left in the stack").to.equal(0);
    const kinds = stackHistory(jobId).map((u) => u.kind);
    expect(kinds, "stack history").to.include.members(["update", "destroy"]);
    const pid = agentPid(jobId);
    if (pid) expect(processAlive(pid), `agent process ${pid}`).to.equal(false);
    expect(containersOf(jobId), "containers left").to.equal("");
  }

  let config: string;
  before(async function () {
    if (!podmanAvailable()) throw new Error("podman is required for the e2e tests");
    const podman = await podmanTestEnv();
    image = podman.registryImage;
    sandbox = await startDriverSandbox(podman.env);
    await sandbox.seed(SUBJECTS.slice(0, 4)); // the fifth has no input: its job fails
    config = sandbox.writeConfig(
      "Pulumi.e2e.yaml",
      localJobConfig(sandbox, {
        image,
        runtime: "podman",
        command: ["sh", "-c", 'cp "$1" "$2/$3_T1w_copy.nii" && echo "segmented $3" > "$2/$3_report.txt"', "sh", "{input}", "{output}", "{subject}"],
      }),
    );
  });

  after(async () => {
    await sandbox?.stop();
  });

  it("--dry-run --json prints the resolved spec, stack name and compute, and creates no stack", async () => {
    const res = await sandbox.run(["--config", config, "--subject", "NDAR_INV0000AAAA", "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const out = JSON.parse(res.stdout);
    expect(out.stack).to.match(/^job-NDARINV0000AAAA-\d{8}T\d{9}Z$/);
    expect(out.spec.subject).to.equal("NDARINV0000AAAA");
    expect(out.spec.inputs[0].url).to.equal(`s3://${sandbox.bucket}/abcd/NDARINV0000AAAA.tgz`);
    expect(out.spec.agent.url).to.match(/\/_cloudcompute\/agent\/agent-[0-9a-f]{64}\.js$/);
    expect(out.agentCommand).to.include("--no-poweroff");
    expect(stackExists(out.stack)).to.equal(false);
    expect(fs.existsSync(path.join(sandbox.home, "jobs"))).to.equal(false);

    const aws = await sandbox.run(["--config", config, "--subject", "NDAR_INV0000AAAA", "--platform", "aws", "--dry-run", "--json"]);
    expect(aws.code, aws.stderr).to.equal(0);
    const rendered = JSON.parse(aws.stdout);
    expect(rendered.userData).to.match(/^#!\/bin\/bash/);
    expect(rendered.userData).to.include(rendered.stack);
    expect(stackExists(rendered.stack)).to.equal(false);
  });

  it("refuses bad input with exit 2, naming the problem, before anything exists", async () => {
    const badSubject = await sandbox.run(["--config", config, "--subject", "NDAR_INVbad"]);
    expect(badSubject.code).to.equal(2);
    expect(badSubject.stderr).to.match(/cloudcompute:subject: subject "NDAR_INVbad" looks like an NDA GUID but is malformed/);
    const badPrefix = await sandbox.run(["--config", config, "--subject", "sub-01", "--output", "https://example.com/x"]);
    expect(badPrefix.code).to.equal(2);
    expect(badPrefix.stderr).to.include("cloudcompute:outputPrefix");
    const missingFile = await sandbox.run(["--config", path.join(sandbox.home, "nope.yaml"), "--subject", "sub-01"]);
    expect(missingFile.code).to.equal(2);
    expect(missingFile.stderr).to.match(/config file .*nope\.yaml does not exist/);
    const badFlag = await sandbox.run(["--config", config, "--subject", "sub-01", "--no-such-flag"]);
    expect(badFlag.code).to.equal(2);
    expect(fs.existsSync(path.join(sandbox.home, "jobs"))).to.equal(false);
    expect(fs.existsSync(path.join(sandbox.home, "state", ".pulumi", "stacks"))).to.equal(false);
  });

  it("runs a job to success: results in S3, success marker, stack emptied with its history kept", async () => {
    const res = await sandbox.run(["--config", config, "--subject", "NDAR_INV0000AAAA", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const result = JSON.parse(res.stdout) as JobResult;
    allJobIds.push(result.jobId);
    expect(result.outcome).to.equal("succeeded");
    expect(result.resultsUrl).to.equal(`s3://${sandbox.bucket}/results/NDARINV0000AAAA/`);
    expect(result.outputs?.count).to.equal(2);
    expect(result.timings.driver).to.include.keys("create", "up", "wait", "destroy", "total");
    expect(result.instanceSeconds).to.be.greaterThan(0);
    expect(res.stderr).to.include("SUCCEEDED").and.include(result.resultsUrl);

    const report = await s3Text("results/NDARINV0000AAAA/NDARINV0000AAAA_report.txt");
    expect(report.trim()).to.equal("segmented NDARINV0000AAAA");
    const marker = JSON.parse(await s3Text(`results/_cloudcompute/${result.jobId}/marker.json`));
    expect(marker.outcome).to.equal("succeeded");
    expect(record(result.jobId).state).to.equal("succeeded");
    expectCleanedUp(result.jobId);
    expect(stackHistory(result.jobId).find((u) => u.kind === "destroy")?.message).to.include("succeeded");
  });

  it("reports a failing container with exit 1 and its reason, never a success marker", async () => {
    const res = await sandbox.run(["--config", config, "--subject", "NDARINV0000BBBB", "--command", '["sh","-c","echo broken >&2; exit 3"]', "--json"]);
    expect(res.code, res.stderr).to.equal(1);
    const result = JSON.parse(res.stdout) as JobResult;
    allJobIds.push(result.jobId);
    expect(result.outcome).to.equal("failed");
    expect(result.reason).to.equal("container-failed");
    expect(res.stderr).to.include("FAILED [container-failed]");
    const marker = JSON.parse(await s3Text(`results/_cloudcompute/${result.jobId}/marker.json`));
    expect(marker.outcome).to.equal("failed");
    const results = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: "results/NDARINV0000BBBB/" }));
    expect(results.Contents ?? []).to.have.length(0);
    expectCleanedUp(result.jobId);
  });

  it("on SIGINT while waiting: destroys the stack's resources, leaves no agent process, exits 130", async () => {
    let driverPid = 0;
    const running = sandbox.run(["--config", config, "--subject", "NDARINV0000CCCC", "--command", '["sh","-c","sleep 300"]', "--json"], {
      onSpawn: (child) => (driverPid = child.pid!),
    });
    // Wait until the job is in its waiting phase: indexed as running, the agent process up.
    let jobId = "";
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const dir = path.join(sandbox.home, "jobs");
      const rec = fs.existsSync(dir)
        ? fs.readdirSync(dir).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as JobRecord).find((r) => r.subject === "NDARINV0000CCCC" && r.state === "running")
        : undefined;
      if (rec) {
        jobId = rec.jobId;
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(jobId, "the job never reached running").to.not.equal("");
    const pid = agentPid(jobId);
    expect(processAlive(pid)).to.equal(true);
    await new Promise((r) => setTimeout(r, 1500)); // let the container start
    process.kill(driverPid, "SIGINT");
    const res = await running;
    allJobIds.push(jobId);
    expect(res.code, res.stderr).to.equal(130);
    expect(JSON.parse(res.stdout).outcome).to.equal("interrupted");
    expect(record(jobId).state).to.equal("interrupted");
    expectCleanedUp(jobId);
  });

  it("runs a batch of 5 subjects at concurrency 2 with one failure, then skips the successes", async () => {
    const subjectsFile = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(subjectsFile, ["# ABCD subjects", "subjectkey", ...SUBJECTS.map((s) => s.replace("NDARINV", "NDAR_INV"))].join("\n") + "\n");
    // Earlier tests already ran AAAA (success) and BBBB (failure): --rerun runs every subject again.
    const res = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, "--concurrency", "2", "--rerun", "--json"]);
    expect(res.code, res.stderr).to.equal(1);
    const batch = batchResultOf(res.stdout);
    expect(batch.entries.map((e) => e.subject)).to.deep.equal(SUBJECTS);
    const outcomes = Object.fromEntries(batch.entries.map((e) => [e.subject, e.outcome]));
    expect(outcomes).to.deep.equal({
      NDARINV0000AAAA: "succeeded",
      NDARINV0000BBBB: "succeeded",
      NDARINV0000CCCC: "succeeded",
      NDARINV0000DDDD: "succeeded",
      NDARINV0000EEEE: "failed",
    });
    expect(batch.entries.find((e) => e.subject === "NDARINV0000EEEE")?.reason).to.equal("missing-input");
    expect(res.stderr).to.match(/SUBJECT\s+OUTCOME/).and.include("4 succeeded, 1 failed");
    for (const entry of batch.entries) {
      allJobIds.push(entry.jobId!);
      expectCleanedUp(entry.jobId!);
    }
    // Never more than 2 jobs at once: their [created, ended] intervals overlap at most pairwise.
    const spans = batch.entries.map((e) => record(e.jobId!)).map((r) => [Date.parse(r.createdAt), Date.parse(r.endedAt!)]);
    for (const [start] of spans) expect(spans.filter(([s, e]) => s <= start && start < e).length).to.be.at.most(2);
    // Each worker's record names its batch, and `list --batch` (the CLI as shipped) selects exactly those jobs.
    for (const entry of batch.entries) expect(record(entry.jobId!).batchId).to.equal(batch.batchId);
    const listed = await sandbox.run(["list", "--json", "--batch", batch.batchId]);
    expect((JSON.parse(listed.stdout) as Array<{ jobId: string }>).map((r) => r.jobId).sort()).to.deep.equal(batch.entries.map((e) => e.jobId!).sort());

    const again = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, "--concurrency", "2", "--json"]);
    expect(again.code, again.stderr).to.equal(1);
    const second = batchResultOf(again.stdout);
    expect(second.entries.filter((e) => e.outcome === "skipped").map((e) => e.subject)).to.deep.equal(SUBJECTS.slice(0, 4));
    const rerun = second.entries.find((e) => e.subject === "NDARINV0000EEEE")!;
    expect(rerun.outcome).to.equal("failed");
    allJobIds.push(rerun.jobId!);
  });

  it("`list --json`, `history` and `pulumi stack history` show every job", async () => {
    const res = await sandbox.run(["list", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const listed = JSON.parse(res.stdout) as JobRecord[];
    expect(listed.map((r) => r.jobId)).to.include.members(allJobIds);
    for (const r of listed) expect(["succeeded", "failed", "interrupted"]).to.include(r.state);
    const table = await sandbox.run(["list"]);
    for (const jobId of allJobIds) {
      expect(table.stdout).to.include(jobId);
      expect(stackHistory(jobId).length, `history of ${jobId}`).to.be.at.least(2);
    }
    const status = await sandbox.run(["status", allJobIds[0], "--json"]);
    expect(JSON.parse(status.stdout).marker.outcome).to.equal("succeeded");
    const logs = await sandbox.run(["logs", allJobIds[0]]);
    expect(logs.code).to.equal(0);
    expect(logs.stdout.length).to.be.greaterThan(0);
    // One command for a job's audit trail, whatever directory it is run from: the up and the destroy.
    const history = await sandbox.run(["history", allJobIds[0], "--json"]);
    expect(history.code, history.stderr).to.equal(0);
    const entries = JSON.parse(history.stdout) as Array<{ kind: string; result: string }>;
    expect(entries.map((e) => e.kind)).to.include.members(["update", "destroy"]);
    expect(entries.every((e) => e.result === "succeeded")).to.equal(true);
    const historyTable = await sandbox.run(["history", allJobIds[0]]);
    expect(historyTable.stdout).to.match(/^history of job-/).and.match(/destroy\s+succeeded/);
    const latest = await sandbox.run(["history", "--json"]);
    expect(latest.code, latest.stderr).to.equal(0); // the latest job's, as status and logs default to
    // A local job's log is on disk too: `logs` reads it there when S3 cannot be reached (a stopped endpoint).
    const localLog = await sandbox.run(["logs", allJobIds[0]], { extraEnv: { AWS_ENDPOINT_URL: "http://127.0.0.1:9" } });
    expect(localLog.code, localLog.stderr).to.equal(0);
    expect(localLog.stdout).to.include(logs.stdout.split("\n")[0]);
    const unknown = await sandbox.run(["history", "job-nobody-20200101T000000000Z"]);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.include('no job "job-nobody-20200101T000000000Z"');
  });
});
