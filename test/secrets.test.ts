/**
 * Where a secret must never appear in plain text, after a real job (real Pulumi engine, moto, runtime none) whose
 * container env holds a secret value, and in the rendered user-data of a job with a presigned input: the driver's
 * output, dry-run, S3 (status, log, provenance, marker — spec.json is deleted at the end), the job index, the stack's
 * outputs and the state file in the backend. Each place is a row of docs/RELIABILITY.md.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { JobResult } from "../driver/run";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { scenario } from "./support/reliability";

const SECRET = "cc-secret-value-7f3a9d";
const SIGNATURE = "5ecre75ignature0123456789abcdef";

describe("secrets stay secret (real Pulumi engine, moto)", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  let run: { stdout: string; stderr: string; result: JobResult };
  let dryRun: string;

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    await sandbox.seed(["NDARINV0000AAAA"]);
    // The container checks it got the value; the value itself is never on a command line.
    config = sandbox.writeConfig("secrets.yaml", {
      ...localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'test -n "$SECRET_VALUE" && echo "got it" > "$2/ok.txt"', "sh", "{input}", "{output}"] }),
      "cloudcompute:env": { SECRET_VALUE: SECRET },
    });
    const dry = await sandbox.run(["--config", config, "--subject", "NDARINV0000AAAA", "--dry-run", "--json"]);
    const presigned = JSON.stringify({ name: "t1", url: `https://bucket.s3.amazonaws.com/x.tgz?X-Amz-Signature=${SIGNATURE}`, access: "presigned" });
    const aws = await sandbox.run(["--config", config, "--subject", "NDARINV0000AAAA", "--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu", "--input", presigned, "--dry-run", "--json"]);
    expect(aws.code, aws.stderr).to.equal(0);
    dryRun = dry.stdout + dry.stderr + aws.stdout + aws.stderr;
    const res = await sandbox.run(["--config", config, "--subject", "NDARINV0000AAAA", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    run = { stdout: res.stdout, stderr: res.stderr, result: JSON.parse(res.stdout) };
  });
  after(async () => {
    await sandbox?.stop();
  });

  const noSecretIn = (place: string, text: () => Promise<string> | string) =>
    it(`no secret in ${place}`, () =>
      scenario("secret", "env value + presigned URL", place, "neither the env value nor a URL signature in plain text", async () => {
        const content = await text();
        expect(content.length, "something to search").to.be.greaterThan(0);
        expect(content).not.to.include(SECRET);
        expect(content).not.to.include(SIGNATURE);
        return `searched ${content.length} bytes: not found`;
      }));

  noSecretIn("the dry-run output (local and aws, with user-data)", () => dryRun);
  noSecretIn("the driver's stdout and stderr", () => run.stdout + run.stderr);
  noSecretIn("S3: everything left in the job's area (status, log, provenance, marker, outputs)", async () => {
    const prefix = `results/_cloudcompute/${run.result.jobId}/`;
    const listed = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: prefix }));
    const keys = (listed.Contents ?? []).map((o) => o.Key!);
    expect(keys, "spec.json is deleted when the job ends").not.to.include(`${prefix}spec.json`);
    const bodies = await Promise.all(keys.map(async (key) => (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: key }))).Body!.transformToString()));
    return bodies.join("\n");
  });
  noSecretIn("the job index record", () => fs.readFileSync(path.join(sandbox.home, "jobs", `${run.result.jobId}.json`), "utf8"));
  noSecretIn("the stack's outputs (pulumi stack output --json)", () => JSON.stringify(sandbox.pulumiJson(run.result.jobId, ["stack", "output", "--json"])));
  noSecretIn("the state files in the backend (every checkpoint and its history)", () => {
    const root = path.join(sandbox.home, "state", ".pulumi");
    const files = fs.readdirSync(root, { recursive: true }).map(String).filter((f) => f.includes(run.result.jobId) && fs.statSync(path.join(root, f)).isFile());
    return files.map((f) => fs.readFileSync(path.join(root, f), "utf8")).join("\n");
  });
  it("no secret on any command line while a batch runs (`--env NAME` takes the value from the environment; workers get their flags through theirs)", () =>
    scenario("secret", "batch with --env NAME", "the process table (/proc/*/cmdline) while the batch's worker, engine and agent run", "the env value on no process's command line", async () => {
      await sandbox.seed(["NDARINV0000BBBB"]);
      const subjects = path.join(sandbox.home, "secret-batch.txt");
      fs.writeFileSync(subjects, "NDARINV0000BBBB\n");
      const command = JSON.stringify(["sh", "-c", 'sleep 3; test -n "$SECRET_VALUE" && echo "got it" > "$2/ok.txt"', "sh", "{input}", "{output}"]);
      const seen = new Set<string>();
      let sampled = 0;
      const running = sandbox.run(["--config", config, "--subjects-file", subjects, "--env", "SECRET_VALUE", "--command", command], { extraEnv: { SECRET_VALUE: SECRET } });
      let done = false;
      void running.then(() => (done = true));
      while (!done) {
        for (const pid of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
          try {
            const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
            sampled++;
            if (cmdline.includes(SECRET)) seen.add(cmdline);
          } catch {
            /* gone */
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      const res = await running;
      expect(res.code, res.stderr).to.equal(0);
      expect([...seen], "command lines holding the secret").to.deep.equal([]);
      const body = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: "results/NDARINV0000BBBB/ok.txt" }))).Body!.transformToString();
      expect(body.trim(), "the job got the value").to.equal("got it");
      return `${sampled} command lines sampled while it ran: the value on none; the job got it`;
    }));
  it("the job really had the value (the container saw it)", async () => {
    const body = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: "results/NDARINV0000AAAA/ok.txt" }))).Body!.transformToString();
    expect(body.trim()).to.equal("got it");
  });
});
