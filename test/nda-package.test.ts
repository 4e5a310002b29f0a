/**
 * `--nda-package`: the NDA package client and the job's inputs from a package, against a local fake of NDA's package
 * service (sandbox/fake-nda.ts, HTTPS) built from the shapes nda-tools relies on: success, 401, 423, unknown package,
 * ids left out of an answer, a metadata file built on request, paging, batches of 50, a failing and a slow batch,
 * expired URLs, ids above 2^31 — and the real CLI's dry run, where the presigned URL appears only in the staged spec.
 */
import { expect } from "chai";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as https from "node:https";
import { gunzipSync } from "node:zlib";
import { NdaApiError, NdaClient, parseMetadataCsv } from "../driver/nda-client";
import { parseCredentialsFile, readCredentialsFile, takeNdaCredentials } from "../driver/nda-credentials";
import { packageManifestFor, resolvePackageJob } from "../driver/nda-package";
import { allSubjectsFromManifest } from "../driver/subjects";
import { parseNdaManifest, subjectsInManifest } from "../job/nda-manifest";
import { dryRun } from "../driver/dry-run";
import { stagedSpec } from "../driver/preflight";
import { specFromConfig, ConfigError } from "../job/config";
import { makeAbcdPackage, startFakeNda, type FakeNda, type FakeNdaPackage } from "../sandbox/fake-nda";
import { CLI } from "../sandbox/driver-sandbox";

const FMRI = fs.readFileSync(path.join(__dirname, "fixtures", "fmriresults01.txt"), "utf8");
const USER = "labuser";
const PASSWORD = "nda-Pa55word-do-not-log-8c1e";
const A_BASELINE_T1 = "s3://NDAR_Central_2/submission_14921/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz";

describe("NDA package client against a fake NDA package service", function () {
  this.timeout(60_000);
  let nda: FakeNda;
  let pkg: FakeNdaPackage;
  const client = (overrides: Partial<ConstructorParameters<typeof NdaClient>[0]> = {}) =>
    new NdaClient({ baseUrl: nda.apiUrl, credentials: { username: USER, password: PASSWORD }, ca: nda.ca, pollMs: 10, retryBaseMs: 10, ...overrides });

  before(async () => {
    pkg = await makeAbcdPackage("1234567", FMRI);
    nda = await startFakeNda({ username: USER, password: PASSWORD, packages: [pkg], pageSizeMax: 3 });
  });
  after(async () => {
    await nda?.close();
  });
  beforeEach(() => {
    for (const key of Object.keys(nda.faults)) delete (nda.faults as Record<string, unknown>)[key];
    nda.requests.length = 0;
  });

  it("lists a package page by page (NDA's 'Cannot navigate past last page' ends it) with ids above 2^31 exact", async () => {
    const files = await client().listFiles("1234567", 3);
    expect(files.map((f) => f.fileId)).to.deep.equal(pkg.files.map((f) => f.id));
    expect(files.length).to.equal(7); // fmriresults01.txt + 6 archives: pages of 3, 3, 1
    expect(Number(files[0].fileId)).to.be.greaterThan(2 ** 31);
    expect(files[0].alias).to.equal("fmriresults01.txt");
    expect(nda.requests.filter((r) => r.path.endsWith("/files")).length).to.equal(3);
    // A listing that fills its last page exactly ends with NDA's error on the next one.
    const six = { ...pkg, id: "66", files: pkg.files.slice(0, 6) };
    nda.addPackage(six);
    expect((await client().listFiles("66", 3)).length).to.equal(6);
  });

  it("an id above 2^53 survives as text (JSON numbers would round it)", async () => {
    const big = "9007199254740993"; // 2^53 + 1
    nda.addPackage({ id: "77", files: [{ ...pkg.files[1], id: big }], metadataReady: true });
    const [file] = await client().listFiles("77");
    expect(file.fileId).to.equal(big);
    const urls = await client().presign("77", [big]);
    expect([...urls.keys()]).to.deep.equal([big]);
  });

  it("reads S3 paths from the package metadata file (a presigned gzip CSV, every field quoted)", async () => {
    const rows = await client().metadata("1234567");
    const row = rows.find((r) => r.s3Url === A_BASELINE_T1)!;
    expect(row.fileId).to.equal(pkg.files.find((f) => f.s3Url === A_BASELINE_T1)!.id);
    expect(row.alias).to.equal("fmriresults01/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz");
    expect(row.size).to.equal(pkg.files.find((f) => f.s3Url === A_BASELINE_T1)!.bytes.length);
    expect(() => parseMetadataCsv(Buffer.from('"A","B"\n"1","2"\n'))).to.throw(/PACKAGE_FILE_ID and NDA_S3_URL/);
  });

  it("a missing metadata file is asked for (packaging-ws) and polled until NDA has built it", async () => {
    nda.addPackage({ ...pkg, id: "88", metadataReady: false });
    nda.faults.metadataPollsNeeded = 3;
    const rows = await client().metadata("88");
    expect(rows.length).to.equal(pkg.files.length);
    const calls = nda.requests.map((r) => `${r.method} ${r.path}`);
    expect(calls.filter((c) => c === "POST /api/packaging-ws/88/create-package-metadata-file")).to.have.length(1);
    expect(calls.filter((c) => c === "GET /api/package/88/files/package_file_metadata").length).to.be.greaterThan(3);
    nda.addPackage({ ...pkg, id: "89", metadataReady: false });
    nda.faults.metadataPollsNeeded = 1000;
    const err = await client({ pollTimeoutMs: 50 }).metadata("89").catch((e: Error) => e);
    expect(err).to.be.instanceOf(NdaApiError);
    expect((err as Error).message).to.match(/still not built/);
  });

  it("presigned URLs: batches of 50, exactly the ids asked for, the bytes behind them; no Authorization header to S3", async () => {
    const many = Array.from({ length: 120 }, (_, i) => ({ ...pkg.files[1], id: String(4_000_000_000 + i), s3Url: `s3://NDAR_Central_9/s/${i}.tgz` }));
    nda.addPackage({ id: "99", files: many, metadataReady: true });
    const urls = await client().presign("99", many.map((f) => f.id));
    expect(urls.size).to.equal(120);
    expect(nda.requests.filter((r) => r.ids).map((r) => r.ids!.length)).to.deep.equal([50, 50, 20]);
    const one = await client().presign("1234567", [pkg.files[1].id]);
    expect(nda.requests.at(-1)!.ids).to.deep.equal([pkg.files[1].id]);
    const bytes = await client().download(one.get(pkg.files[1].id)!, "test");
    expect(bytes.equals(pkg.files[1].bytes)).to.equal(true);
    expect(gunzipSync(bytes).length).to.be.greaterThan(0);
    const withAuth = await fetchWith(nda.ca, one.get(pkg.files[1].id)!, { Authorization: "Basic x" });
    expect(withAuth.status).to.equal(400);
    const ranged = await fetchWith(nda.ca, one.get(pkg.files[1].id)!, { Range: "bytes=0-9" });
    expect(ranged.status).to.equal(206);
    expect(ranged.headers["content-range"]).to.equal(`bytes 0-9/${pkg.files[1].bytes.length}`);
    const tampered = one.get(pkg.files[1].id)!.replace(/X-Amz-Signature=[0-9a-f]/, "X-Amz-Signature=z");
    expect((await fetchWith(nda.ca, tampered, {})).status).to.equal(403);
  });

  it("ids NDA leaves out of an answer are asked for once more; still missing, the error names them", async () => {
    const [a, b] = [pkg.files[1].id, pkg.files[2].id];
    nda.faults.omitIds = new Set([b]);
    nda.faults.omitTimes = 1;
    const urls = await client().presign("1234567", [a, b]);
    expect([...urls.keys()].sort()).to.deep.equal([a, b].sort());
    expect(nda.requests.filter((r) => r.ids).map((r) => r.ids)).to.deep.equal([[a, b], [b]]);
    nda.faults.omitTimes = undefined;
    const err = await client().presign("1234567", [a, b]).catch((e: Error) => e);
    expect((err as Error).message).to.include(`file id(s) ${b}`).and.include("Internal error generating URL");
  });

  it("a failing batch (503) is retried; a slow one is waited for", async () => {
    nda.faults.failBatches = 2;
    const urls = await client().presign("1234567", [pkg.files[1].id]);
    expect(urls.size).to.equal(1);
    expect(nda.requests.filter((r) => r.ids).length).to.equal(3);
    nda.faults.failBatches = 100;
    const err = await client({ attempts: 3 }).presign("1234567", [pkg.files[1].id]).catch((e: Error) => e);
    expect((err as Error).message).to.match(/HTTP 503 after retries/);
    nda.faults.failBatches = 0;
    nda.faults.slowBatchMs = 1500;
    expect((await client().presign("1234567", [pkg.files[1].id])).size).to.equal(1);
  });

  it("401 (wrong password), 423 (locked), 404 (unknown package): clear errors that never hold the password", async () => {
    const wrong = await client({ credentials: { username: USER, password: "not-it" } }).packageInfo("1234567").then(() => new NdaApiError("no error"), (e: NdaApiError) => e);
    expect(wrong.status).to.equal(401);
    expect(wrong.message).to.include("refused your credentials").and.not.include("not-it");
    nda.faults.locked = true;
    const locked = await client().packageInfo("1234567").then(() => new NdaApiError("no error"), (e: NdaApiError) => e);
    expect(locked.status).to.equal(423);
    expect(locked.message).to.include("locked");
    nda.faults.locked = false;
    const unknown = await client().packageInfo("5550000").then(() => new NdaApiError("no error"), (e: NdaApiError) => e);
    expect(unknown.status).to.equal(404);
    expect(unknown.message).to.include("no package 5550000");
    for (const err of [wrong, locked, unknown]) expect(err.message).not.to.include(PASSWORD);
  });

  it("an expired URL answers 403 AccessDenied 'Request has expired', as S3 does", async () => {
    nda.faults.urlExpiresSeconds = 0;
    const url = (await client().presign("1234567", [pkg.files[1].id])).get(pkg.files[1].id)!;
    const res = await fetchWith(nda.ca, url, { Range: "bytes=0-9" });
    expect(res.status).to.equal(403);
    expect(res.body).to.include("<Code>AccessDenied</Code><Message>Request has expired</Message>");
    const err = await client().download(url, "test").catch((e: Error) => e);
    expect((err as Error).message).to.include("the URL expired").and.not.include("X-Amz-Signature=");
  });

  it("refuses plain http for the API (the password goes with every call)", () => {
    expect(() => new NdaClient({ baseUrl: "http://nda.example/api/package", credentials: { username: "u", password: "p" } })).to.throw(/must be https/);
  });

  it("the package's subjects for the filters (what --all-subjects runs)", () => {
    const subjects = (filters: { dataType?: string; session?: string }) => subjectsInManifest(parseNdaManifest(FMRI, "fmriresults01.txt"), { ...filters, pick: "latest" }, "fmriresults01.txt").included;
    expect(subjects({ dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1" })).to.deep.equal(["NDARINVA1B2C3D4", "NDARINVZZ99YY88"]);
    expect(subjects({ dataType: "ABCD-MPROC-DTI" })).to.deep.equal(["NDARINVA1B2C3D4"]);
  });

  describe("a job's inputs from the package", () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-nda-pkg-"));
    const config = path.join(tmp, "Pulumi.nda.yaml");
    fs.writeFileSync(config, `config:\n  aws:region: us-east-1\n  cloudcompute:image: neuronets/kwyk:latest-cpu\n  cloudcompute:outputPrefix: s3://lab-results/kwyk\n  cloudcompute:instanceType: m5.4xlarge\n  cloudcompute:platform: local\n`);
    const flags = () => ({ config, subject: "NDAR_INVA1B2C3D4", ndaPackage: "1234567", ndaApi: nda.apiUrl, dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1" });
    const credentialsFile = (mode: number) => {
      const file = path.join(tmp, `nda-credentials-${mode.toString(8)}`);
      fs.writeFileSync(file, `username=${USER}\npassword=${PASSWORD}\n`);
      fs.chmodSync(file, mode);
      return file;
    };
    // Asynchronous: the fake NDA server answers from this process's event loop.
    const cli = (args: string[], env: Record<string, string | undefined> = { NDA_USERNAME: USER, NDA_PASSWORD: PASSWORD }) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [CLI, "--config", config, ...args], { env: { ...process.env, CLOUDCOMPUTE_HOME: path.join(tmp, "home"), NODE_EXTRA_CA_CERTS: nda.caFile, CLOUDCOMPUTE_NDA_POLL_MS: "10", ...env } });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
        child.on("error", reject);
        child.on("close", (status) => resolve({ status, stdout, stderr }));
      });
    const cliArgs = () => ["--subject", "NDAR_INVA1B2C3D4", "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1"];

    it("resolves the subject's file through the package's own fmriresults01.txt; the presigned URL is only in the staged spec", async () => {
      process.env.NDA_USERNAME = USER.toUpperCase(); // NDA user names are case-insensitive: sent lower-cased
      process.env.NDA_PASSWORD = PASSWORD;
      const resolved = await resolvePackageJob(flags(), { ca: nda.ca });
      expect(process.env.NDA_PASSWORD, "taken out of the environment: the engine and a local agent never inherit it").to.equal(undefined);
      const fileId = pkg.files.find((f) => f.s3Url === A_BASELINE_T1)!.id;
      expect(nda.requests.filter((r) => r.ids).flatMap((r) => r.ids), "URLs for the manifest and exactly the job's file").to.deep.equal([pkg.files[0].id, fileId]);
      const staged = stagedSpec(resolved);
      expect(staged.inputs).to.have.length(1);
      expect(staged.inputs[0].access).to.equal("presigned");
      expect(staged.inputs[0].url).to.match(/^https:\/\/127\.0\.0\.1:\d+\/s3\/NDAR_Central_2\/.*X-Amz-Signature=[0-9a-f]{64}/);
      expect(staged.inputs[0].origin).to.include(`nda package 1234567, file id ${fileId}, ${A_BASELINE_T1}`).and.include("fmriresults01.txt line 3 (ABCD-MPROC-T1, baselineYear1Arm1)").and.match(/URL expires \d{4}-/);
      const shown = JSON.stringify(dryRun(resolved));
      const signature = new URL(staged.inputs[0].url).searchParams.get("X-Amz-Signature")!;
      const token = new URL(staged.inputs[0].url).searchParams.get("X-Amz-Security-Token")!;
      expect(shown).to.include("presigned").and.include(`file id ${fileId}`);
      expect(shown).not.to.include(signature);
      expect(shown).not.to.include(token);
    });

    it("all subjects of the package for the filters (for --all-subjects), from the package's own manifest", async () => {
      const { subject: _omit, ...rest } = flags();
      const withPackage = { ...rest, ndaCredentials: credentialsFile(0o600) };
      const manifest = await packageManifestFor(withPackage, { ca: nda.ca });
      expect(manifest?.name).to.include("fmriresults01.txt");
      // NDARINVZZ99YY88 was submitted twice: with --pick error (the default) it is left out, and the table says why.
      const strict = allSubjectsFromManifest(withPackage, manifest);
      expect(strict.included).to.deep.equal(["NDARINVA1B2C3D4"]);
      expect(strict.excluded.map((e) => e.subject)).to.include("NDARINVZZ99YY88");
      expect(allSubjectsFromManifest({ ...withPackage, pick: "latest" }, manifest).included).to.deep.equal(["NDARINVA1B2C3D4", "NDARINVZZ99YY88"]);
      expect(await packageManifestFor({ config, subject: "NDARINVA1B2C3D4" })).to.equal(undefined);
    });

    it("the CLI's --dry-run --json: same input, redacted, exit 0; nothing created", async () => {
      const res = await cli([...cliArgs(), "--dry-run", "--json"]);
      expect(res.status, res.stderr).to.equal(0);
      const input = JSON.parse(res.stdout).spec.inputs[0];
      expect(input.access).to.equal("presigned");
      expect(input.url).to.match(/\/s3\/NDAR_Central_2\/submission_14921\/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118\.tgz\?<redacted>$/);
      expect(input.origin).to.include(A_BASELINE_T1);
      for (const url of nda.issued) expect(res.stdout + res.stderr).not.to.include(new URL(url).searchParams.get("X-Amz-Signature")!);
      expect(res.stdout + res.stderr).not.to.include(PASSWORD);
      expect(fs.existsSync(path.join(tmp, "home", "state")), "nothing created").to.equal(false);
    });

    it("--all-subjects --nda-package: the package's subjects for the filters, the exclusions with their reason, one file each", async () => {
      const args = ["--all-subjects", "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1"];
      const res = await cli([...args, "--dry-run", "--json"]);
      expect(res.status, res.stderr).to.equal(0);
      const out = JSON.parse(res.stdout);
      expect(out.subjects).to.deep.equal(["NDARINVA1B2C3D4"]);
      expect(out.excluded.find((e: { subject: string }) => e.subject === "NDARINVZZ99YY88").reason).to.match(/--pick|several|files/);
      expect(res.stderr).to.include("NDARINVZZ99YY88");
      expect(out.jobs[0].spec.inputs[0].url).to.match(/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_\d+\.tgz\?<redacted>$/);
      for (const url of nda.issued) expect(res.stdout + res.stderr).not.to.include(new URL(url).searchParams.get("X-Amz-Signature")!);
      const latest = await cli([...args, "--pick", "latest", "--dry-run", "--json"]);
      expect(latest.status, latest.stderr).to.equal(0);
      expect(JSON.parse(latest.stdout).subjects).to.deep.equal(["NDARINVA1B2C3D4", "NDARINVZZ99YY88"]);
    });

    it("no passphrase: a dry run warns the run would be refused; a batch is refused (exit 2) before any worker starts", async () => {
      const env = { NDA_USERNAME: USER, NDA_PASSWORD: PASSWORD, PULUMI_CONFIG_PASSPHRASE: undefined, PULUMI_CONFIG_PASSPHRASE_FILE: undefined };
      const dry = await cli([...cliArgs(), "--dry-run", "--json"], env);
      expect(dry.status, dry.stderr).to.equal(0);
      expect(dry.stderr).to.match(/warning: without --dry-run this job would be refused \(exit 2\): .*inputs "input" \(a presigned URL\)/);
      const args = ["--all-subjects", "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1"];
      const batch = await cli(args, env); // the parent asks for no URL: its workers would, then each refuse
      expect(batch.status, batch.stderr).to.equal(2);
      expect(batch.stderr).to.include("export PULUMI_CONFIG_PASSPHRASE=");
      expect(fs.existsSync(path.join(tmp, "home", "batches")), "no worker started").to.equal(false);
    });

    it("bad credentials, an unknown package, no credentials, a readable credentials file: exit 2, never the password", async () => {
      const wrong = await cli([...cliArgs(), "--dry-run"], { NDA_USERNAME: USER, NDA_PASSWORD: "wrong-Pa55" });
      expect(wrong.status).to.equal(2);
      expect(wrong.stderr).to.include("refused your credentials").and.not.include("wrong-Pa55");
      const unknown = await cli(["--subject", "NDARINVA1B2C3D4", "--nda-package", "4242", "--nda-api", nda.apiUrl, "--dry-run"]);
      expect(unknown.status).to.equal(2);
      expect(unknown.stderr).to.include("no package 4242");
      const none = await cli([...cliArgs(), "--dry-run"], { NDA_USERNAME: undefined, NDA_PASSWORD: undefined });
      expect(none.status).to.equal(2);
      expect(none.stderr).to.include("NDA_USERNAME and NDA_PASSWORD");
      const file = path.join(tmp, "nda-credentials");
      fs.writeFileSync(file, `username=${USER}\npassword=${PASSWORD}\n`, { mode: 0o644 });
      fs.chmodSync(file, 0o644);
      const open = await cli([...cliArgs(), "--nda-credentials", file, "--dry-run"], { NDA_USERNAME: undefined, NDA_PASSWORD: undefined });
      expect(open.status).to.equal(2);
      expect(open.stderr).to.include("mode 644").and.include("chmod 600").and.not.include(PASSWORD);
      fs.chmodSync(file, 0o600);
      const ok = await cli([...cliArgs(), "--nda-credentials", file, "--dry-run", "--json"], { NDA_USERNAME: undefined, NDA_PASSWORD: undefined });
      expect(ok.status, ok.stderr).to.equal(0);
      const badId = await cli(["--subject", "NDARINVA1B2C3D4", "--nda-package", "abc", "--dry-run"]);
      expect(badId.status).to.equal(2);
      expect(badId.stderr).to.include("numeric id");
    });

    it("a subject the package's manifest lacks: exit 2 naming what it holds for the subject", async () => {
      const res = await cli(["--subject", "NDARINVA1B2C3D4", "--nda-package", "1234567", "--nda-api", nda.apiUrl, "--data-type", "ABCD-MPROC-T1", "--session", "6YearFollowUpYArm1", "--dry-run"]);
      expect(res.status).to.equal(2);
      expect(res.stderr).to.include("nda package 1234567: fmriresults01.txt has no file for subject NDARINVA1B2C3D4").and.include("sessions 2YearFollowUpYArm1, baselineYear1Arm1");
    });

    it("pulumi up cannot resolve a package (its URLs are asked for per job, with credentials a stack must not hold)", () => {
      const keys: Record<string, string> = { "cloudcompute:subject": "NDARINVA1B2C3D4", "cloudcompute:image": "x", "cloudcompute:outputPrefix": "s3://b/p", "cloudcompute:instanceType": "m5.large", "aws:region": "us-east-1", "cloudcompute:ndaPackage": "1234567", "cloudcompute:inputs": "s3://b/x.tgz" };
      expect(() => specFromConfig((k) => keys[k])).to.throw(ConfigError, /resolved by the driver/);
    });
  });

  it("credentials file format: username/password lines, user name lower-cased; a bad line is not echoed", () => {
    expect(parseCredentialsFile("# mine\nusername = LabUser\npassword=a=b\n", "f")).to.deep.equal({ username: "labuser", password: "a=b" });
    const bad = (() => {
      try {
        parseCredentialsFile("hunter2\n", "f");
      } catch (err) {
        return (err as Error).message;
      }
    })();
    expect(bad).to.match(/line 1: expected username=/).and.not.include("hunter2");
    expect(() => parseCredentialsFile("username=x\n", "f")).to.throw(/both/);
    expect(() => readCredentialsFile("/nonexistent/nda")).to.throw(/ENOENT/);
    // What the file really is counts, wherever its name leads: a FIFO does not block, a link to a readable file is refused.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-nda-cred-"));
    execFileSync("mkfifo", [path.join(dir, "fifo")]);
    expect(() => readCredentialsFile(path.join(dir, "fifo"))).to.throw(/is not a regular file/);
    fs.writeFileSync(path.join(dir, "open"), "username=u\npassword=p\n", { mode: 0o644 });
    fs.symlinkSync(path.join(dir, "open"), path.join(dir, "link"));
    expect(() => readCredentialsFile(path.join(dir, "link"))).to.throw(/has mode 644/);
    fs.chmodSync(path.join(dir, "open"), 0o600);
    expect(readCredentialsFile(path.join(dir, "link"))).to.deep.equal({ username: "u", password: "p" });
    const saved = { u: process.env.NDA_USERNAME, p: process.env.NDA_PASSWORD };
    process.env.NDA_USERNAME = "u";
    process.env.NDA_PASSWORD = "p";
    expect(takeNdaCredentials(undefined, { keepEnv: true })).to.deep.equal({ username: "u", password: "p" });
    expect(process.env.NDA_PASSWORD, "a batch parent keeps it for its workers").to.equal("p");
    takeNdaCredentials(undefined);
    expect(process.env.NDA_PASSWORD).to.equal(undefined);
    if (saved.u !== undefined) process.env.NDA_USERNAME = saved.u;
    if (saved.p !== undefined) process.env.NDA_PASSWORD = saved.p;
  });
});

/** A GET through node:https trusting the fake's certificate (fetch cannot be given a CA in-process). */
function fetchWith(ca: Buffer, url: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    https.get(url, { headers, ca }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers as Record<string, string>, body }));
    }).on("error", reject);
  });
}
