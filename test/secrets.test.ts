/**
 * Where a secret must never appear in plain text, after a real job (real Pulumi engine, moto, runtime none) whose
 * container env holds a secret value, in the rendered user-data of a job with a presigned input, and after an
 * `--nda-package` job on --platform local that reads its input through a presigned URL from a fake NDA service (the
 * NDA password, the URLs' signatures and session tokens): the driver's output, dry-run, S3 (status, log, provenance,
 * marker — spec.json is deleted at the end), the agent's log on disk, the job index, the stack's outputs and the state
 * file in the backend. Each place is a row of docs/RELIABILITY.md.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { JobResult } from "../driver/run";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { makeAbcdPackage, startFakeNda, type FakeNda } from "../sandbox/fake-nda";
import { scenario } from "./support/reliability";

const SECRET = "cc-secret-value-7f3a9d";
const SIGNATURE = "5ecre75ignature0123456789abcdef";
const NDA_PASSWORD = "nda-Pa55word-never-anywhere-41c9";
const FMRI = fs.readFileSync(path.join(__dirname, "fixtures", "fmriresults01.txt"), "utf8");

describe("secrets stay secret (real Pulumi engine, moto)", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  let run: { stdout: string; stderr: string; result: JobResult };
  let dryRun: string;
  let nda: FakeNda;
  let ndaRun: { stdout: string; stderr: string; result: JobResult };
  /** Everything that must not appear: the env value, the signatures and tokens of every URL NDA handed out, the password. */
  const secrets = () => [SECRET, SIGNATURE, NDA_PASSWORD, ...nda.issued.flatMap((url) => ["X-Amz-Signature", "X-Amz-Security-Token"].map((p) => new URL(url).searchParams.get(p)!))];
  const jobIds = () => [run.result.jobId, ndaRun.result.jobId];

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    nda = await startFakeNda({ username: "labuser", password: NDA_PASSWORD, packages: [await makeAbcdPackage("1234567", FMRI)] });
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

    // An NDA package job: the package's own fmriresults01.txt picks the file, the agent reads it through a presigned URL.
    const ndaEnv = { NDA_USERNAME: "LabUser", NDA_PASSWORD, NODE_EXTRA_CA_CERTS: nda.caFile };
    const ndaArgs = ["--config", config, "--subject", "NDAR_INVA1B2C3D4", "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1",
      "--input", JSON.stringify({ name: "t1", url: "{manifest}", select: "**/*_T1w.nii" })];
    const ndaDry = await sandbox.run([...ndaArgs, "--dry-run", "--json"], { extraEnv: ndaEnv });
    const ndaAws = await sandbox.run([...ndaArgs, "--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu", "--dry-run", "--json"], { extraEnv: ndaEnv });
    expect(ndaDry.code, ndaDry.stderr).to.equal(0);
    expect(ndaAws.code, ndaAws.stderr).to.equal(0);
    expect(JSON.parse(ndaAws.stdout).userData, "the aws dry run renders user-data").to.be.a("string");
    dryRun += ndaDry.stdout + ndaDry.stderr + ndaAws.stdout + ndaAws.stderr;
    const copy = JSON.stringify(["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"]);
    const ndaRes = await sandbox.run([...ndaArgs, "--command", copy, "--json"], { extraEnv: ndaEnv });
    expect(ndaRes.code, ndaRes.stderr).to.equal(0);
    ndaRun = { stdout: ndaRes.stdout, stderr: ndaRes.stderr, result: JSON.parse(ndaRes.stdout) };
  });
  after(async () => {
    await sandbox?.stop();
    await nda?.close();
  });

  it("an --nda-package job on --platform local read its input through a presigned URL from the package and succeeded", async () => {
    expect(ndaRun.result.outcome).to.equal("succeeded");
    const archive = "NDAR_Central_2/submission_14921/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz";
    expect(nda.served, "the agent read the archive from the fake NDA's S3 side").to.include(archive);
    const t1w = "results/NDARINVA1B2C3D4/sub-NDARINVA1B2C3D4_ses-baselineYear1Arm1_run-01_T1w.nii";
    const body = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: t1w }))).Body!.transformToByteArray();
    expect(Buffer.from(body).subarray(344, 347).toString("latin1"), "a NIfTI from the package's archive").to.equal("n+1");
    const prefix = `results/_cloudcompute/${ndaRun.result.jobId}/`;
    const listed = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: prefix }));
    const provenanceKey = (listed.Contents ?? []).map((o) => o.Key!).find((key) => /provenance/.test(key))!;
    const provenance = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: provenanceKey }))).Body!.transformToString();
    expect(provenance, "the provenance names the package and the file id").to.include("nda package 1234567, file id ");
  });

  const noSecretIn = (place: string, text: () => Promise<string> | string) =>
    it(`no secret in ${place}`, () =>
      scenario("secret", "env value + presigned URL + NDA package job", place, "no env value, URL signature or session token, NDA password in plain text", async () => {
        const content = await text();
        expect(content.length, "something to search").to.be.greaterThan(0);
        for (const secret of secrets()) expect(content).not.to.include(secret);
        return `searched ${content.length} bytes for ${secrets().length} secrets: not found`;
      }));

  noSecretIn("the dry-run output (local and aws, with user-data)", () => dryRun);
  noSecretIn("the driver's stdout and stderr", () => run.stdout + run.stderr + ndaRun.stdout + ndaRun.stderr);
  noSecretIn("S3: everything left in the job's area (status, log, provenance, marker, outputs)", async () => {
    const bodies: string[] = [];
    for (const jobId of jobIds()) {
      const prefix = `results/_cloudcompute/${jobId}/`;
      const listed = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: prefix }));
      const keys = (listed.Contents ?? []).map((o) => o.Key!);
      expect(keys, "spec.json is deleted when the job ends").not.to.include(`${prefix}spec.json`);
      for (const key of keys) bodies.push(await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: key }))).Body!.transformToString());
    }
    return bodies.join("\n");
  });
  noSecretIn("the local agent's logs on disk (agent.log, agent.out)", () => {
    const dir = path.join(sandbox.home, "local", ndaRun.result.jobId);
    return fs.readdirSync(dir).filter((f) => /^agent\.(log|out)$/.test(f)).map((f) => fs.readFileSync(path.join(dir, f), "utf8")).join("\n");
  });
  noSecretIn("the job index records", () => jobIds().map((jobId) => fs.readFileSync(path.join(sandbox.home, "jobs", `${jobId}.json`), "utf8")).join("\n"));
  noSecretIn("the stack's outputs (pulumi stack output --json)", () => jobIds().map((jobId) => JSON.stringify(sandbox.pulumiJson(jobId, ["stack", "output", "--json"]))).join("\n"));
  noSecretIn("the state files in the backend (every checkpoint and its history)", () => {
    const root = path.join(sandbox.home, "state", ".pulumi");
    const files = fs.readdirSync(root, { recursive: true }).map(String).filter((f) => jobIds().some((jobId) => f.includes(jobId)) && fs.statSync(path.join(root, f)).isFile());
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
  it("an --nda-package batch: each worker asks for its own subject's URL; the NDA password in no environment but the drivers', on no command line, in no batch log", () =>
    scenario("secret", "batch with --nda-package", "the process table (/proc/*/cmdline, /proc/*/environ of engine and agent) and the batch's logs", "the password only in the driver processes' environment", async () => {
      const subjects = path.join(sandbox.home, "nda-batch.txt");
      fs.writeFileSync(subjects, "NDAR_INVA1B2C3D4\nNDAR_INVZZ99YY88\n");
      const before = nda.requests.length;
      const args = ["--config", config, "--subjects-file", subjects, "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1", "--pick", "latest",
        "--input", JSON.stringify({ name: "t1", url: "{manifest}", select: "**/*_T1w.nii" }), "--command", JSON.stringify(["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"]), "--concurrency", "2", "--rerun"]; // NDARINVA1B2C3D4 succeeded above
      const seen = new Set<string>();
      const running = sandbox.run(args, { extraEnv: { NDA_USERNAME: "labuser", NDA_PASSWORD, NODE_EXTRA_CA_CERTS: nda.caFile } });
      let done = false;
      void running.then(() => (done = true));
      let sampled = 0;
      while (!done) {
        for (const pid of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
          try {
            const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
            if (cmdline.includes(NDA_PASSWORD)) seen.add(`cmdline: ${cmdline}`);
            // The batch parent and its workers are the driver, which holds the credentials; nothing they start may.
            if (cmdline.includes("cloudcompute.js") || cmdline.includes("mocha")) continue;
            if (fs.readFileSync(`/proc/${pid}/environ`, "utf8").includes(NDA_PASSWORD)) seen.add(`environ: ${cmdline}`);
            sampled++;
          } catch {
            /* gone, or not ours */
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      const res = await running;
      expect(res.code, res.stderr).to.equal(0);
      expect([...seen], "processes holding the password").to.deep.equal([]);
      const asked = nda.requests.slice(before).filter((r) => r.ids).map((r) => r.ids!);
      const pkg = await makeAbcdPackage("1234567", FMRI);
      const idOf = (name: string) => pkg.files.find((f) => f.s3Url.endsWith(name))!.id;
      // The parent reads the package's manifest once to check the batch; each worker asks for the manifest and its one file.
      expect(asked.filter((ids) => ids.length !== 1), "one id per request").to.deep.equal([]);
      expect(asked.flat().filter((id) => id !== pkg.files[0].id).sort()).to.deep.equal(
        [idOf("NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz"), idOf("NDARINVZZ99YY88_baselineYear1Arm1_ABCD-MPROC-T1_20180315121314.tgz")].sort(),
      );
      const batchDir = path.join(sandbox.home, "batches");
      const logs = fs.readdirSync(batchDir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(batchDir, f)).isFile());
      const text = logs.map((f) => fs.readFileSync(path.join(batchDir, f), "utf8")).join("\n");
      expect(text.length).to.be.greaterThan(0);
      for (const secret of secrets()) expect(text).not.to.include(secret);
      return `${sampled} engine/agent processes sampled: the password in none; each worker asked for its own file; ${text.length} bytes of batch logs clean`;
    }));
  it("the job really had the value (the container saw it)", async () => {
    const body = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: "results/NDARINV0000AAAA/ok.txt" }))).Body!.transformToString();
    expect(body.trim()).to.equal("got it");
  });
});
