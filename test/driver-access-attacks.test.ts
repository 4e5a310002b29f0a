/**
 * Attacks on the driver's input-access checks (cold review of driver-access): a batch's --dry-run printing its rows'
 * presigned URLs whole, a bad row's message carrying a signature, a headerless CSV whose URL column is silently
 * ignored, S3 hosts whose region is misread (accelerate, FIPS, the global endpoint, a SigV4 credential's region),
 * and URLs that cannot live as long as they say (X-Amz-Expires over S3's 7 days; a session token).
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { checkPresignedExpiry } from "../job/presigned";
import { expiryBlocksRetry, inputsForRetry } from "../driver/run";
import { regionFromS3Host } from "../driver/regions";
import { readSubjectsList } from "../driver/subjects";
import { BadInputError } from "../driver/errors";
import { withInputOverrides } from "../driver/options";
import { parseJobSpec } from "../job/spec";
import { findSubjectFiles, parseNdaManifest, subjectsInManifest } from "../job/nda-manifest";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";

const A = "NDARINV0000AAAA";
const B = "NDARINV0000BBBB";
const limits = { maxRuntimeMinutes: 240, graceMinutes: 10 };
const stamp = (date: Date) => date.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
const fresh = (key: string, extra = "") =>
  `https://cc-study.s3.us-east-1.amazonaws.com/${key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRETID%2F20261129%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=${stamp(new Date())}&X-Amz-Expires=129600${extra}&X-Amz-Signature=ROWSECRETSIG`;

describe("driver-access attacks: secrets in batch output and messages", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;

  before(async () => {
    sandbox = await startDriverSandbox();
    config = sandbox.writeConfig("attacks.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }));
  });
  after(async () => sandbox?.stop());

  it("a batch's --dry-run --json shows its rows' presigned URLs without their signatures", async () => {
    const file = path.join(sandbox.home, "presigned.csv");
    fs.writeFileSync(file, `subject,input\n${A},${fresh(`abcd/${A}.nii`)}\n${B},${fresh(`abcd/${B}.nii`)}\n`);
    const input = JSON.stringify({ name: "t1", url: fresh("abcd/{subject}.nii"), access: "presigned", extract: "none" });
    const res = await sandbox.run(["--config", config, "--subjects-file", file, "--input", input, "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stdout + res.stderr).to.not.match(/ROWSECRETSIG|AKIDSECRETID/);
    const out = JSON.parse(res.stdout);
    expect(out.subjectInputs[A].input).to.equal(`https://cc-study.s3.us-east-1.amazonaws.com/abcd/${A}.nii?<redacted>`);
  });
});

describe("driver-access attacks: subjects files", () => {
  const dir = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "cc-rows-"));
  const write = (text: string) => {
    const file = path.join(dir, `rows-${Math.random().toString(36).slice(2)}.csv`);
    fs.writeFileSync(file, text);
    return file;
  };

  it("a row's bad URL is named by line without its signature", () => {
    const file = write(`subject,input\n${A},https://cc-study.s3.amazonaws.com?X-Amz-Signature=ROWSECRETSIG\n`);
    expect(() => readSubjectsList(file)).to.throw(BadInputError, /line 2: input "https:\/\/cc-study\.s3\.amazonaws\.com\?<redacted>": expected/);
    expect(() => readSubjectsList(file)).to.not.throw(/ROWSECRETSIG/);
  });

  it("a headerless CSV whose rows carry URLs is refused (they would be ignored and the config's URL used)", () => {
    const file = write(`${A},s3://cc-study/custom/a.tgz\n${B},s3://cc-study/custom/b.tgz\n`);
    expect(() => readSubjectsList(file)).to.throw(BadInputError, /line 1: .*a URL, but the file has no header/);
    // Other extra columns (NDA's, a note) are still ignored without a header.
    expect(readSubjectsList(write(`${A},42\n${B}\tnote\n`)).subjects).to.deep.equal([A, B]);
  });
});

describe("driver-access attacks: two cells for one input", () => {
  const dir = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "cc-cols-"));
  it("a header naming an input column twice is refused (the last cell silently won)", () => {
    const file = path.join(dir, "twice.csv");
    fs.writeFileSync(file, `subject,input,notes,input\n${A},s3://cc-study/a.tgz,x,s3://cc-study/other.tgz\n`);
    expect(() => readSubjectsList(file)).to.throw(BadInputError, /line 1: column "input" appears twice/);
  });

  it("a row giving both input and input.NAME of the first input is refused (one of them silently won)", () => {
    const spec = parseJobSpec({ apiVersion: "cloudcompute/v1", jobId: "job-x", subject: A, inputs: [{ name: "t1", url: `s3://cc-study/${A}.tgz` }], container: { image: "x" }, outputs: { prefix: "s3://cc-study/out" }, instance: { type: "m5.large", region: "us-east-1" } });
    expect(() => withInputOverrides(spec, { "": "s3://cc-study/a.tgz", t1: "s3://cc-study/b.tgz" }, "row 2")).to.throw(BadInputError, /^row 2: both input and input\.t1 give the URL of input "t1"/);
    expect(withInputOverrides(spec, { t1: "s3://cc-study/b.tgz" }, "row 2").inputs[0].url).to.equal("s3://cc-study/b.tgz");
  });
});

describe("driver-access attacks: regions and expiries read from URLs", () => {
  it("a SigV4 URL's region is its credential's; accelerate and the virtual-hosted global endpoint name none; FIPS names its region", () => {
    const cred = (region: string) => `X-Amz-Credential=AKID%2F20261129%2F${region}%2Fs3%2Faws4_request&X-Amz-Signature=s`;
    expect(regionFromS3Host(`https://bucket.s3.amazonaws.com/k?${cred("eu-west-1")}`)).to.equal("eu-west-1");
    expect(regionFromS3Host(`https://bucket.s3-accelerate.amazonaws.com/k?${cred("eu-west-1")}`)).to.equal("eu-west-1");
    expect(regionFromS3Host("https://bucket.s3-accelerate.amazonaws.com/k?Signature=s")).to.equal(undefined);
    expect(regionFromS3Host("https://bucket.s3-accelerate.dualstack.amazonaws.com/k")).to.equal(undefined);
    expect(regionFromS3Host("https://bucket.s3-fips.us-gov-west-1.amazonaws.com/k")).to.equal("us-gov-west-1");
    expect(regionFromS3Host("https://bucket.s3-fips.dualstack.us-east-2.amazonaws.com/k")).to.equal("us-east-2");
    // SigV2 on the global virtual-hosted endpoint works for a bucket in any region: unknown, not us-east-1.
    expect(regionFromS3Host("https://bucket.s3.amazonaws.com/k?AWSAccessKeyId=x&Expires=1&Signature=y")).to.equal(undefined);
    // Path-style on the global endpoint only reaches us-east-1 buckets.
    expect(regionFromS3Host("https://s3.amazonaws.com/NDAR_Central_2/k")).to.equal("us-east-1");
    // Host tricks: not AWS.
    expect(regionFromS3Host("https://evil.s3.us-east-1.amazonaws.com.attacker.net/k")).to.equal(undefined);
    expect(regionFromS3Host(`https://attacker.net/k?${cred("us-east-1")}`)).to.equal(undefined);
  });

  it("refuses an X-Amz-Expires over S3's limit (the URL never works), and warns that a session token may end it sooner", () => {
    const now = new Date();
    const url = (expires: number, extra = "") => `https://b.s3.us-east-1.amazonaws.com/k.nii?X-Amz-Date=${stamp(now)}&X-Amz-Expires=${expires}${extra}&X-Amz-Signature=s`;
    const huge = checkPresignedExpiry([{ name: "t1", url: url(99_999_999), access: "presigned" }], limits, now);
    expect(huge.problems).to.have.length(1);
    expect(huge.problems[0]).to.match(/^input "t1": X-Amz-Expires 99999999 is more than S3 accepts \(604800 s, 7 days\): S3 refuses the URL/);
    const token = checkPresignedExpiry([{ name: "t1", url: url(129_600, "&X-Amz-Security-Token=TOKENSECRET"), access: "presigned" }], limits, now);
    expect(token.problems).to.deep.equal([]);
    expect(token.warnings).to.have.length(1);
    expect(token.warnings[0]).to.match(/^input "t1": the presigned URL was signed with temporary credentials \(X-Amz-Security-Token\)/);
    expect(token.warnings[0]).to.not.include("TOKENSECRET");
  });
});

describe("driver-access attacks: a retry launched hours later", () => {
  it("is not launched when its presigned URLs would die before it could end (they were checked for the first launch)", () => {
    const signedAt = new Date("2026-11-29T00:00:00Z");
    const url = `https://b.s3.us-east-1.amazonaws.com/k.nii?X-Amz-Date=${stamp(signedAt)}&X-Amz-Expires=${6 * 3600}&X-Amz-Signature=s`;
    const spec = { inputs: [{ name: "t1", url, access: "presigned" as const }], limits: { ...limits, heartbeatTimeoutSeconds: 60 } } as unknown as Parameters<typeof expiryBlocksRetry>[0];
    // At the first launch the URL outlives the job (295 min of 360)...
    expect(expiryBlocksRetry(spec, signedAt)).to.equal(undefined);
    // ...a spot interruption 3 h in leaves it 3 h: the retry would fail when it dies.
    expect(expiryBlocksRetry(spec, new Date(signedAt.getTime() + 3 * 3600_000))).to.match(/^input "t1": the presigned URL expires at 2026-11-29T06:00:00\.000Z \(in 180 min\)/);
  });
});

describe("a retry asks for fresh presigned URLs when the run can", () => {
  const signedAt = new Date("2026-11-29T00:00:00Z");
  const later = new Date(signedAt.getTime() + 3 * 3600_000);
  const urlAt = (at: Date) => `https://b.s3.us-east-1.amazonaws.com/k.nii?X-Amz-Date=${stamp(at)}&X-Amz-Expires=${6 * 3600}&X-Amz-Signature=SIG${at.getTime()}`;
  const spec = { inputs: [{ name: "t1", url: urlAt(signedAt), access: "presigned" as const }], limits: { ...limits, heartbeatTimeoutSeconds: 60 } } as unknown as Parameters<typeof inputsForRetry>[0];

  it("launches the retry with the URLs asked for again, checked for the retry's own start", async () => {
    const next = await inputsForRetry(spec, async () => [{ ...spec.inputs[0], url: urlAt(later) }], later);
    expect(next).to.have.property("refreshed", true);
    expect((next as { spec: typeof spec }).spec.inputs[0].url).to.equal(urlAt(later));
  });

  it("without a way to renew them, or when renewing fails, the retry is not launched (and the error shows no signature)", async () => {
    expect(await inputsForRetry(spec, undefined, later)).to.have.property("blocked").that.match(/expires at 2026-11-29T06:00:00\.000Z/);
    const failed = await inputsForRetry(spec, async () => { throw new Error(`NDA refused: ${urlAt(later)}`); }, later);
    expect(failed).to.have.property("blocked").that.include("fresh presigned URLs could not be had").and.not.include(`SIG${later.getTime()}`);
    // Fresh URLs that are themselves too short are refused too.
    const short = await inputsForRetry(spec, async () => [{ ...spec.inputs[0], url: urlAt(signedAt) }], later);
    expect(short).to.have.property("blocked");
  });

  it("a job without presigned inputs is retried as it was, without asking", async () => {
    let asked = false;
    const plain = { ...spec, inputs: [{ name: "t1", url: "s3://b/k.nii", access: "role" as const }] } as unknown as typeof spec;
    const next = await inputsForRetry(plain, async () => { asked = true; return []; }, later);
    expect(asked).to.equal(false);
    expect(next).to.deep.equal({ spec: plain, refreshed: false });
  });
});

describe("driver-access attacks: a manifest row whose subjectkey and file name disagree", () => {
  const row = (key: string, guid: string, type: string) => `"${key}"\t"${type}"\t"s3://NDAR_Central_2/sub/${guid}_baselineYear1Arm1_${type}_20170811130118.tgz"`;
  const manifest = ["subjectkey\tsession_det\tderived_files", row("NDAR_INV0000AAAA", B, "ABCD-MPROC-T1"), row("NDAR_INV0000BBBB", B, "ABCD-MPROC-T1"), row("NDAR_INV0000AAAA", A, "ABCD-MPROC-T2")].join("\n");
  const files = parseNdaManifest(manifest, "m.txt");

  it("--all-subjects excludes the subject with the reason, and its own job is refused: it would read another subject's image", () => {
    const selection = subjectsInManifest(files, { dataType: "ABCD-MPROC-T1", pick: "error" }, "m.txt");
    expect(selection.included).to.deep.equal([B]);
    expect(selection.excluded).to.have.length(1);
    expect(selection.excluded[0].subject).to.equal(A);
    expect(selection.excluded[0].reason).to.match(/^line 2: subjectkey NDARINV0000AAAA, but the file name names NDARINV0000BBBB/);
    expect(() => findSubjectFiles(files, { subject: A, dataType: "ABCD-MPROC-T1", pick: "error" }, "m.txt")).to.throw(/line 2: subjectkey NDARINV0000AAAA, but the file name names NDARINV0000BBBB/);
    // A's other data type is its own file: fine.
    expect(findSubjectFiles(files, { subject: A, dataType: "ABCD-MPROC-T2", pick: "error" }, "m.txt")).to.have.length(1);
  });
});
