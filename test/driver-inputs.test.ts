/**
 * The driver's checks on inputs before anything exists: presigned URLs that would die before the job could end,
 * buckets in another region than the instance (moto honours LocationConstraint), and subjects files whose CSV rows
 * carry per-subject input URLs — read, validated by line, shown in --dry-run --json and carried to batch workers.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import { checkPresignedExpiry, neededUrlMinutes, presignedExpiry } from "../job/presigned";
import { checkInputRegions, lookUpBucketRegion, RegionCache, regionFromS3Host } from "../driver/regions";
import { readSubjectsList } from "../driver/subjects";
import { BadInputError } from "../driver/errors";
import { parseJobSpec } from "../job/spec";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { makeAbcdArchive } from "../sandbox/abcd-data";

const A = "NDARINV0000AAAA";
const B = "NDARINV0000BBBB";
const NOW = new Date("2026-11-29T12:00:00Z");
const limits = { maxRuntimeMinutes: 240, graceMinutes: 10 };
const sigv4 = (date: string, seconds: number) => `https://b.s3.us-east-1.amazonaws.com/k/x.nii?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=${date}&X-Amz-Expires=${seconds}&X-Amz-Signature=abc`;

describe("presigned URL expiry, checked before launch", () => {
  it("reads SigV4 (X-Amz-Date + X-Amz-Expires) and SigV2 (Expires) expiries; none is undefined", () => {
    expect(presignedExpiry(sigv4("20261129T120000Z", 3600))!.toISOString()).to.equal("2026-11-29T13:00:00.000Z");
    expect(presignedExpiry("https://b.s3.amazonaws.com/k?AWSAccessKeyId=x&Expires=1796040000&Signature=y")!.toISOString()).to.equal("2026-11-30T12:00:00.000Z");
    expect(presignedExpiry("https://host/k?token=x")).to.equal(undefined);
    expect(presignedExpiry("not a url")).to.equal(undefined);
  });

  it("refuses a URL that dies before boot allowance + max runtime + grace + margin, saying when and what to do", () => {
    expect(neededUrlMinutes(limits)).to.equal(15 + 240 + 10 + 30);
    const input = (url: string) => [{ name: "t1", url, access: "presigned" }];
    // 36 h (NDA's usual lifetime): fine.
    expect(checkPresignedExpiry(input(sigv4("20261129T115900Z", 129599)), limits, NOW)).to.deep.equal({ problems: [], warnings: [] });
    // 4 h left: the job needs 295 min.
    const short = checkPresignedExpiry(input(sigv4("20261129T120000Z", 4 * 3600)), limits, NOW);
    expect(short.problems).to.have.length(1);
    expect(short.problems[0]).to.equal(
      'input "t1": the presigned URL expires at 2026-11-29T16:00:00.000Z (in 240 min), but the job may need it until 2026-11-29T16:55:00.000Z ' +
        "(boot allowance 15 + max runtime 240 + grace 10 + margin 30 min): get a fresh URL, or give a shorter --max-runtime (at most 185)",
    );
    const expired = checkPresignedExpiry(input(sigv4("20200101T000000Z", 3600)), limits, NOW);
    expect(expired.problems[0]).to.match(/already expired.*get a fresh URL$/);
    const unknown = checkPresignedExpiry(input("https://host/k.nii?token=x"), limits, NOW);
    expect(unknown.problems).to.deep.equal([]);
    expect(unknown.warnings[0]).to.match(/^input "t1": the presigned URL does not say when it expires/);
    // Role and public inputs have no expiry.
    expect(checkPresignedExpiry([{ name: "t1", url: "s3://b/k", access: "role" }], limits, NOW).problems).to.deep.equal([]);
  });
});

describe("input regions", () => {
  it("reads the region from an S3 host in every spelling", () => {
    expect(regionFromS3Host("https://bucket.s3.eu-west-1.amazonaws.com/k?x")).to.equal("eu-west-1");
    expect(regionFromS3Host("https://s3.us-west-2.amazonaws.com/bucket/k")).to.equal("us-west-2");
    expect(regionFromS3Host("https://s3-ap-southeast-2.amazonaws.com/bucket/k")).to.equal("ap-southeast-2");
    expect(regionFromS3Host("https://bucket.s3-eu-central-1.amazonaws.com/k")).to.equal("eu-central-1");
    expect(regionFromS3Host("https://bucket.s3.amazonaws.com/k")).to.equal(undefined); // any region's bucket answers there
    expect(regionFromS3Host("https://s3.amazonaws.com/NDAR_Central_2/k")).to.equal("us-east-1");
    expect(regionFromS3Host("https://bucket.s3.dualstack.us-east-2.amazonaws.com/k")).to.equal("us-east-2");
    expect(regionFromS3Host("https://nda-files.example.org/k")).to.equal(undefined);
  });
});

describe("input regions and subjects files against moto and the real CLI", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  let prevEnv: NodeJS.ProcessEnv;

  const spec = (inputs: unknown[]) =>
    parseJobSpec({ apiVersion: "cloudcompute/v1", jobId: "job-x", subject: A, inputs, container: { image: "x" }, outputs: { prefix: "s3://cc-study/out" }, instance: { type: "m5.large", region: "us-east-1" } });

  before(async () => {
    sandbox = await startDriverSandbox();
    prevEnv = { ...process.env };
    Object.assign(process.env, sandbox.moto.env);
    await sandbox.s3.send(new CreateBucketCommand({ Bucket: "cc-eu-data", CreateBucketConfiguration: { LocationConstraint: "eu-west-1" } }));
    config = sandbox.writeConfig("inputs.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"] }));
  });
  after(async () => {
    process.env = prevEnv;
    await sandbox?.stop();
  });

  it("finds each bucket's region with HeadBucket, once per bucket however many inputs and jobs", async () => {
    expect(await lookUpBucketRegion("cc-eu-data", false)).to.deep.equal({ region: "eu-west-1" });
    expect(await lookUpBucketRegion(sandbox.bucket, false)).to.deep.equal({ region: "us-east-1" });
    const cache = new RegionCache();
    const here = spec([{ name: "a", url: `s3://${sandbox.bucket}/abcd/a.tgz` }, { name: "b", url: `s3://${sandbox.bucket}/abcd/b.tgz`, access: "public" }]);
    expect(await checkInputRegions(here, { allowCrossRegion: false, cache })).to.deep.equal([]);
    expect(await checkInputRegions(here, { allowCrossRegion: false, cache })).to.deep.equal([]);
    expect(cache.lookups).to.equal(1);
  });

  it("refuses an input in another region unless allowed, naming it, both regions, why and how to fix", async () => {
    const there = spec([{ name: "t1", url: "s3://cc-eu-data/abcd/a.tgz" }]);
    let refused: Error | undefined;
    await checkInputRegions(there, { allowCrossRegion: false, cache: new RegionCache() }).catch((err) => (refused = err));
    expect(refused).to.be.instanceOf(BadInputError);
    expect(refused!.message).to.equal(
      'input "t1" (s3://cc-eu-data) is in eu-west-1, but the instance would run in us-east-1: reading across regions is billed per GB and slower ' +
        "(ABCD's NDA buckets are in us-east-1). Run in the data's region with --region eu-west-1, or accept the transfer with --allow-cross-region",
    );
    expect(await checkInputRegions(there, { allowCrossRegion: true, cache: new RegionCache() })).to.deep.equal([]);
    // A presigned URL's region is its host's.
    const presigned = spec([{ name: "p", url: "https://x.s3.eu-west-1.amazonaws.com/k.nii?X-Amz-Signature=s", access: "presigned" }]);
    await checkInputRegions(presigned, { allowCrossRegion: false, cache: new RegionCache() }).then(
      () => expect.fail("accepted"),
      (err: Error) => expect(err.message).to.match(/^input "p" \(https:\/\/x\.s3\.eu-west-1\.amazonaws\.com\/k\.nii\?<redacted>\) is in eu-west-1/),
    );
  });

  it("an unknown region (no such bucket, unreachable endpoint) is a warning, not a refusal", async () => {
    const warnings = await checkInputRegions(spec([{ name: "t1", url: "s3://cc-no-such-bucket/a.tgz" }]), { allowCrossRegion: false, cache: new RegionCache() });
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.match(/^input "t1" \(s3:\/\/cc-no-such-bucket\): its region is unknown \(.+\); if it is not us-east-1, reading it costs inter-region transfer$/);
    const host = spec([{ name: "p", url: "https://files.example.org/k.nii?sig=1", access: "presigned" }]);
    expect(await checkInputRegions(host, { allowCrossRegion: false, cache: new RegionCache() })).to.deep.equal([
      'input "p" (https://files.example.org/k.nii?<redacted>): its region is unknown (its host names no AWS region); if it is not us-east-1, reading it costs inter-region transfer',
    ]);
  });

  async function nothingCreated(): Promise<void> {
    const stacks = path.join(sandbox.home, "state", ".pulumi", "stacks");
    expect(fs.existsSync(stacks) ? fs.readdirSync(stacks, { recursive: true }).filter((f) => String(f).endsWith(".json")) : []).to.deep.equal([]);
    expect(sandbox.records()).to.deep.equal([]);
    const objects = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: "results/" }));
    expect(objects.KeyCount ?? 0).to.equal(0);
  }

  it("CLI: an aws job reading an eu-west-1 bucket from us-east-1 is exit 2 before anything exists", async () => {
    const res = await sandbox.run(["--config", config, "--subject", A, "--platform", "aws", "--runtime", "docker", "--input", "s3://cc-eu-data/abcd/{subject}.tgz"]);
    expect(res.code, res.stderr).to.equal(2);
    expect(res.stderr).to.match(/error: input "input" \(s3:\/\/cc-eu-data\) is in eu-west-1, but the instance would run in us-east-1: .*--allow-cross-region/);
    await nothingCreated();
  });

  it("CLI: an expired presigned URL is exit 2 with its expiry; one without an expiry runs with a warning (dry-run)", async () => {
    const expired = JSON.stringify({ name: "t1", url: sigv4("20200101T000000Z", 3600), access: "presigned", extract: "none" });
    const res = await sandbox.run(["--config", config, "--subject", A, "--input", expired]);
    expect(res.code, res.stderr).to.equal(2);
    expect(res.stderr).to.include('presigned input(s) would expire before the job could end:\n  input "t1": the presigned URL expires at 2020-01-01T01:00:00.000Z (already expired)');
    expect(res.stderr).to.not.include("X-Amz-Signature=abc");
    await nothingCreated();
    const unknown = JSON.stringify({ name: "t1", url: "https://files.example.org/x.nii?token=secret", access: "presigned", extract: "none" });
    const dry = await sandbox.run(["--config", config, "--subject", A, "--input", unknown, "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stderr).to.match(/warning: input "t1": the presigned URL does not say when it expires/);
    expect(dry.stdout).to.not.include("token=secret");
  });

  it("CLI: an NDA bucket read with the instance role is said before launch (its roles get no access), a presigned one is not", async () => {
    const nda = "s3://NDAR_Central_2/submission_14921/{subject}_baselineYear1Arm1_ABCD-MPROC-T1_20170711184237.tgz";
    const dry = await sandbox.run(["--config", config, "--subject", A, "--platform", "aws", "--runtime", "docker", "--input", nda, "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stderr).to.match(/warning: input "input" reads s3:\/\/NDAR_Central_2\/\S+ with access "role": NDA's buckets grant no access to your account's roles .*--nda-package ID/);
    const local = await sandbox.run(["--config", config, "--subject", A, "--platform", "local", "--input", nda, "--dry-run", "--json"]);
    expect(local.stderr, "the local platform reads with this machine's credentials").to.not.include("NDA's buckets");
  });

  it("reads CSV subjects files with input columns; empty cells keep the config's URL; the old formats still work", () => {
    const file = path.join(sandbox.home, "rows.csv");
    fs.writeFileSync(file, `subjectkey,input,input.mask,notes\n# comment\nNDAR_INV0000AAAA,"s3://cc-study/custom/a,1.tgz",,x\n${B},,s3://cc-study/masks/b.nii,y\n${B},,s3://cc-study/masks/b.nii,again\n`);
    expect(readSubjectsList(file)).to.deep.equal({
      subjects: [A, B],
      inputs: { [A]: { "": "s3://cc-study/custom/a,1.tgz" }, [B]: { mask: "s3://cc-study/masks/b.nii" } },
      lines: { [A]: 3, [B]: 4 },
    });
    fs.writeFileSync(file, `${A}\n${B}\t42\n`);
    expect(readSubjectsList(file)).to.deep.equal({ subjects: [A, B], inputs: {}, lines: { [A]: 1, [B]: 2 } });
  });

  it("refuses bad rows by line: a URL that is none, an input column misspelt, a subject listed twice with other inputs", () => {
    const file = path.join(sandbox.home, "bad-rows.csv");
    fs.writeFileSync(file, `subject,input,Input.T1\n${A},ftp://x/y,\n${B},s3://cc-study/b.tgz,\n${B},s3://cc-study/other.tgz,\n`);
    expect(() => readSubjectsList(file)).to.throw(
      BadInputError,
      /line 1: column "Input\.T1": expected input or input\.NAME[\s\S]*line 2: input "ftp:\/\/x\/y": expected an s3:\/\/ or https:\/\/ URL[\s\S]*line 4: subject NDARINV0000BBBB is listed again with other inputs than on line 3/,
    );
  });

  it("CLI: --dry-run --json shows each subject's URLs; an unknown input name is exit 2 naming the line", async () => {
    const file = path.join(sandbox.home, "batch.csv");
    fs.writeFileSync(file, `subject,input.t1\n${A},s3://cc-study/custom/${A}-t1.tgz\n${B},\n`);
    const res = await sandbox.run(["--config", config, "--subjects-file", file, "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const out = JSON.parse(res.stdout);
    expect(out.subjects).to.deep.equal([A, B]);
    expect(out.subjectInputs, "by the file's column").to.deep.equal({ [A]: { "input.t1": `s3://cc-study/custom/${A}-t1.tgz` } });
    expect(out.jobs.map((job: any) => job.spec.inputs[0].url)).to.deep.equal([`s3://cc-study/custom/${A}-t1.tgz`, `s3://cc-study/abcd/${B}.tgz`]);
    expect(out.jobs[0].spec.inputs[0].origin).to.equal(`subjects file ${file} line 2`);
    fs.writeFileSync(file, `subject,input\n${A},s3://cc-study/abcd/${B}.tgz\n`);
    const other = await sandbox.run(["--config", config, "--subjects-file", file, "--dry-run"]);
    expect(other.code, other.stderr).to.equal(2);
    expect(other.stderr).to.include(`error: subjects file ${file} line 2: the url names subject ${B}, but this job's subject is ${A}`);
    fs.writeFileSync(file, `subject,input.t2\n${A},s3://cc-study/x.tgz\n`);
    const bad = await sandbox.run(["--config", config, "--subjects-file", file, "--dry-run"]);
    expect(bad.code, bad.stderr).to.equal(2);
    expect(bad.stderr).to.include(`error: subjects file ${file} line 2: no input named "t2" in the config (its inputs: t1)`);
    // A row's zip where the config's input was written for tgz archives would fail on the instance: refused here.
    fs.writeFileSync(file, `subject,input\n${A},s3://cc-study/custom/${A}.zip\n`);
    const tgz = JSON.stringify({ name: "t1", url: "s3://cc-study/abcd/{subject}.tgz", extract: "tgz" });
    const zip = await sandbox.run(["--config", config, "--input", tgz, "--subjects-file", file, "--dry-run"]);
    expect(zip.code, zip.stderr).to.equal(2);
    expect(zip.stderr).to.include(`line 2: s3://cc-study/custom/${A}.zip is a zip archive by its name, but the config's input "t1" says extract: tgz: set its extract to auto`);
    await nothingCreated();
  });

  it("CLI: a batch worker reads its row's URL (the config's templated key does not exist), passed through the environment", async () => {
    const archive = await makeAbcdArchive(A);
    await sandbox.s3.send(new PutObjectCommand({ Bucket: sandbox.bucket, Key: "custom/only-here.tgz", Body: archive.tgz }));
    const file = path.join(sandbox.home, "one.csv");
    fs.writeFileSync(file, `subject,input\n${A},s3://cc-study/custom/only-here.tgz\n`);
    const res = await sandbox.run(["--config", config, "--subjects-file", file, "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const result = JSON.parse(res.stdout.trim().split("\n").pop()!);
    expect(result.entries.map((e: any) => [e.subject, e.outcome])).to.deep.equal([[A, "succeeded"]]);
    const results = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: `results/${A}/` }));
    expect((results.Contents ?? []).map((o) => o.Key)).to.include(`results/${A}/sub-${A}_ses-baselineYear1Arm1_run-01_T1w.nii`);
  });
});
