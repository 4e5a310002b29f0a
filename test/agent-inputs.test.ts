/**
 * Inputs against a real moto S3 server through the real SDK: streamed download + extraction, selection by glob,
 * integrity checks, presigned and unsigned access, and the failure reason each broken input must produce.
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { InputSpec } from "../job/spec";
import { JobFailure } from "../agent/errors";
import { fetchInput } from "../agent/inputs";
import { presignedExpiry } from "../job/presigned";
import { selectFiles } from "../agent/select";
import { archiveKindFor } from "../job/input-file";
import { makeAbcdArchive, makeTar, newBucket, put, sharedMoto, testS3 } from "./support/fixtures";
import { startExpiryProxy, type ExpiryProxy } from "./support/s3-expiry-proxy";
import { craftZip, dirEntry, fileEntry } from "./support/zip";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync, readdirSync } from "node:fs";
import { zipDownloadPath } from "../agent/inputs";

const GUID = "NDARINVABCD1234";
const T1_GLOB = "**/*_T1w.nii";
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function failureOf(promise: Promise<unknown>): Promise<JobFailure> {
  try {
    await promise;
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(JobFailure);
    return err as JobFailure;
  }
  throw new Error("expected a JobFailure, got success");
}

describe("agent inputs (moto S3)", function () {
  this.timeout(60_000);
  let s3: S3Client;
  let bucket: string;
  let dirs: string[] = [];
  let proxy: ExpiryProxy;
  const dest = () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cc-inputs-"));
    dirs.push(dir);
    return path.join(dir, "t1");
  };
  const input = (fields: Record<string, unknown>) => InputSpec.parse({ name: "t1", ...fields });

  before(async () => {
    const moto = await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3);
    proxy = await startExpiryProxy(moto.endpoint);
  });
  after(async () => {
    await proxy.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("downloads an ABCD-like .tgz in ranges, extracts it on the fly and selects the T1w by glob", async () => {
    // Random voxels so the archive is bigger than several ranges of 64 KiB.
    const archive = await makeAbcdArchive(GUID, { dims: [64, 64, 64], voxel: () => Math.floor(Math.random() * 256) });
    const key = `submission_1/${archive.name}`;
    await put(s3, bucket, key, archive.tgz);
    const progress: number[] = [];
    const target = dest();
    const got = await fetchInput(input({ url: `s3://${bucket}/${key}`, select: T1_GLOB, sha256: sha256(archive.tgz) }), target, {
      partSize: 64 * 1024,
      concurrency: 4,
      onProgress: (done) => progress.push(done),
    });
    expect(archive.tgz.length).to.be.greaterThan(4 * 64 * 1024);
    expect(got.extract).to.equal("tgz");
    expect(got.bytes).to.equal(archive.tgz.length);
    expect(got.sha256).to.equal(sha256(archive.tgz));
    expect(got.selected).to.deep.equal([archive.t1w]);
    expect(got.files).to.have.length(3);
    // Byte-identical NIfTI after ranged download, gunzip and untar.
    expect(sha256(readFileSync(path.join(target, archive.t1w)))).to.equal(sha256(archive.nifti));
    expect(progress.at(-1)).to.equal(archive.tgz.length);
    expect(progress.length).to.be.greaterThan(4);
  });

  it("reads legacy bucket names (capitals, underscores) path-style", async () => {
    const legacy = `NDAR_Central_${process.pid}`;
    await s3.send(new (await import("@aws-sdk/client-s3")).CreateBucketCommand({ Bucket: legacy }));
    await put(s3, legacy, "submission_9/plain.nii", Buffer.from("not really nifti"));
    const got = await fetchInput(input({ url: `s3://${legacy}/submission_9/plain.nii` }), dest());
    expect(got.extract).to.equal("none");
    expect(got.files).to.deep.equal(["plain.nii"]);
    expect(got.selected).to.deep.equal(["plain.nii"]);
  });

  it("extracts a plain .tar and, without select, hands over the directory", async () => {
    const tarball = await makeTar({ "a/one.txt": "1", "b/two.txt": "22" });
    await put(s3, bucket, "plain/data.tar", tarball);
    const target = dest();
    const got = await fetchInput(input({ url: `s3://${bucket}/plain/data.tar` }), target);
    expect(got.extract).to.equal("tar");
    expect(got.files).to.deep.equal(["a/one.txt", "b/two.txt"]);
    expect(got.selected).to.deep.equal(["."]);
    expect(readFileSync(path.join(target, "b/two.txt"), "utf8")).to.equal("22");
  });

  it("reads a presigned HTTPS-style URL with ranged GETs", async () => {
    const archive = await makeAbcdArchive(GUID, { dims: [48, 48, 48], voxel: () => Math.floor(Math.random() * 256) });
    await put(s3, bucket, `nda/${archive.name}`, archive.tgz);
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: `nda/${archive.name}` }), { expiresIn: 600 });
    // The spec demands https for presigned inputs; moto (and the proxy) speak http, so the URL is set after parsing.
    const spec = input({ url: "https://example.invalid/x.tgz", access: "presigned", select: T1_GLOB });
    spec.url = proxy.via(url);
    const target = dest();
    const got = await fetchInput(spec, target, { partSize: 32 * 1024 });
    expect(got.bytes).to.equal(archive.tgz.length);
    expect(got.url).to.match(/\?<redacted>$/); // the signature never reaches records
    expect(sha256(readFileSync(path.join(target, archive.t1w)))).to.equal(sha256(archive.nifti));
  });

  it("reports an expired presigned URL as presigned-url-expired, in those words", async () => {
    await put(s3, bucket, "nda/expired.tgz", Buffer.from("x"));
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: "nda/expired.tgz" }), {
      expiresIn: 60,
      signingDate: new Date(Date.now() - 3600_000),
    });
    expect(presignedExpiry(url)!.getTime()).to.be.lessThan(Date.now());
    const spec = input({ url: "https://example.invalid/x.tgz", access: "presigned" });
    spec.url = proxy.via(url);
    const failure = await failureOf(fetchInput(spec, dest()));
    expect(failure.reason).to.equal("presigned-url-expired");
    expect(failure.message).to.include("presigned URL expired");
    expect(failure.message).to.not.include("X-Amz-Signature");
  });

  it("reads a public object unsigned, with no credentials at all, and is refused a private one", async () => {
    await put(s3, bucket, "openneuro/public.nii", Buffer.from("public bytes"), { ACL: "public-read" });
    await put(s3, bucket, "openneuro/private.nii", Buffer.from("private bytes"));
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      const target = dest();
      const got = await fetchInput(input({ url: `s3://${bucket}/openneuro/public.nii`, access: "public" }), target);
      expect(readFileSync(path.join(target, "public.nii"), "utf8")).to.equal("public bytes");
      expect(got.bytes).to.equal(12);
      const refused = await failureOf(fetchInput(input({ url: `s3://${bucket}/openneuro/private.nii`, access: "public" }), dest()));
      expect(refused.reason).to.equal("missing-input");
      expect(refused.message).to.include("denied");
    } finally {
      process.env.AWS_ACCESS_KEY_ID = saved.id;
      process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });

  it("fails a missing object with missing-input", async () => {
    const failure = await failureOf(fetchInput(input({ url: `s3://${bucket}/nope/absent.tgz` }), dest()));
    expect(failure.reason).to.equal("missing-input");
    expect(failure.message).to.include("does not exist");
  });

  it("fails a wrong sha256 with input-integrity", async () => {
    await put(s3, bucket, "sums/file.nii", Buffer.from("abc"));
    const failure = await failureOf(fetchInput(input({ url: `s3://${bucket}/sums/file.nii`, sha256: "0".repeat(64) }), dest()));
    expect(failure.reason).to.equal("input-integrity");
  });

  it("checks a full-object SHA-256 that S3 stores", async () => {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "sums/checked.nii", Body: "checked", ChecksumAlgorithm: "SHA256" }));
    const got = await fetchInput(input({ url: `s3://${bucket}/sums/checked.nii` }), dest());
    expect(got.sha256).to.equal(sha256(Buffer.from("checked")));
  });

  for (const [what, body] of [
    ["garbage bytes", Buffer.from("this is not gzip at all, just text pretending to be an archive")],
    ["a truncated gzip stream", null],
    ["gzip of something that is not a tar", gzipSync(Buffer.alloc(5000, 0x41))],
  ] as Array<[string, Buffer | null]>) {
    it(`fails ${what} named .tgz with corrupt-archive`, async () => {
      let bytes: Buffer | null = body;
      if (!bytes) {
        const full = (await makeAbcdArchive(GUID, { dims: [32, 32, 32], voxel: () => Math.floor(Math.random() * 256) })).tgz;
        bytes = full.subarray(0, Math.floor(full.length / 2));
      }
      await put(s3, bucket, `bad/${what.replace(/ /g, "-")}.tgz`, bytes);
      const failure = await failureOf(fetchInput(input({ url: `s3://${bucket}/bad/${what.replace(/ /g, "-")}.tgz` }), dest()));
      expect(failure.reason).to.equal("corrupt-archive");
    });
  }

  it("refuses archive entries that escape the input directory", async () => {
    const evil = await makeTar({ "../escape.txt": "x" });
    await put(s3, bucket, "bad/evil.tar", evil);
    const target = dest();
    const failure = await failureOf(fetchInput(input({ url: `s3://${bucket}/bad/evil.tar` }), target));
    expect(failure.reason).to.equal("corrupt-archive");
    expect(existsSync(path.join(path.dirname(target), "escape.txt"))).to.equal(false);
  });

  it("extracts a zip (stored and deflated entries, nested directories), selects by glob and hashes the selected file", async () => {
    const t1 = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7) % 251));
    const zip = craftZip([
      dirEntry("sub-01"),
      dirEntry("sub-01/ses-1/anat"),
      { name: "sub-01/ses-1/anat/sub-01_T1w.nii", body: t1, method: 8 },
      fileEntry("sub-01/ses-1/anat/sub-01_T1w.json", '{"stored": true}', 0),
      fileEntry("sub-01/ses-1/fmap/sub-01_fieldmap.nii", "decoy", 8),
    ]);
    await put(s3, bucket, "zips/subject.zip", zip);
    const target = dest();
    const got = await fetchInput(input({ url: `s3://${bucket}/zips/subject.zip`, select: T1_GLOB, sha256: sha256(zip) }), target, { partSize: 64 * 1024 });
    expect(got.extract).to.equal("zip");
    expect(got.sha256).to.equal(sha256(zip));
    expect(got.files).to.deep.equal(["sub-01/ses-1/anat/sub-01_T1w.json", "sub-01/ses-1/anat/sub-01_T1w.nii", "sub-01/ses-1/fmap/sub-01_fieldmap.nii"]);
    expect(got.selected).to.deep.equal(["sub-01/ses-1/anat/sub-01_T1w.nii"]);
    expect(got.mount).to.equal("selected");
    expect(got.digests).to.deep.equal([{ path: "sub-01/ses-1/anat/sub-01_T1w.nii", sha256: sha256(t1), bytes: t1.length }]);
    expect(readFileSync(path.join(target, "sub-01/ses-1/anat/sub-01_T1w.json"), "utf8")).to.equal('{"stored": true}');
    expect(existsSync(zipDownloadPath(target)), "the downloaded zip is removed").to.equal(false);
  });

  it("extracts a zip written by the zip tool, and without select hashes every file", async function () {
    const work = path.dirname(dest());
    mkdirSync(path.join(work, "src/sub-02/anat"), { recursive: true });
    writeFileSync(path.join(work, "src/sub-02/anat/sub-02_T1w.nii"), Buffer.alloc(100_000, 3));
    writeFileSync(path.join(work, "src/sub-02/README"), "tiny");
    execFileSync("zip", ["-q", "-r", "-n", "README", path.join(work, "made.zip"), "sub-02"], { cwd: path.join(work, "src") }); // README stored
    const zip = readFileSync(path.join(work, "made.zip"));
    await put(s3, bucket, "zips/made.zip", zip);
    const target = dest();
    const got = await fetchInput(input({ url: `s3://${bucket}/zips/made.zip` }), target);
    expect(got.files).to.deep.equal(["sub-02/README", "sub-02/anat/sub-02_T1w.nii"]);
    expect(got.selected).to.deep.equal(["."]);
    expect(got.mount).to.equal("all");
    expect(got.digests.map((d) => [d.path, d.bytes])).to.deep.equal([["sub-02/README", 4], ["sub-02/anat/sub-02_T1w.nii", 100_000]]);
    expect(got.digests[1].sha256).to.equal(sha256(Buffer.alloc(100_000, 3)));
  });

  it("checks a zip's sha256 before extracting anything: a mismatch is input-integrity with nothing written", async () => {
    await put(s3, bucket, "zips/checked.zip", craftZip([fileEntry("a.nii", "aaa")]));
    const target = dest();
    const failure = await failureOf(fetchInput(input({ url: `s3://${bucket}/zips/checked.zip`, sha256: "0".repeat(64) }), target));
    expect(failure.reason).to.equal("input-integrity");
    expect(readdirSync(target)).to.deep.equal([]);
    expect(existsSync(zipDownloadPath(target))).to.equal(false);
  });

  it("records a plain input's one file with the object's own hash", async () => {
    await put(s3, bucket, "plain/one.nii", Buffer.from("one file"));
    const got = await fetchInput(input({ url: `s3://${bucket}/plain/one.nii` }), dest());
    expect(got.digests).to.deep.equal([{ path: "one.nii", sha256: sha256(Buffer.from("one file")), bytes: 8 }]);
  });

  it("selects by glob: none is no-matching-file, several need allowMultiple", () => {
    const files = ["sub-1/anat/a_T1w.nii", "sub-1/anat/b_T1w.nii", "sub-1/anat/a_T1w.json"];
    expect(() => selectFiles(files, "**/*_T2w.nii", false, "t1")).to.throw(JobFailure).with.property("reason", "no-matching-file");
    expect(() => selectFiles(files, T1_GLOB, false, "t1")).to.throw(JobFailure).with.property("reason", "multiple-matching-files");
    expect(selectFiles(files, T1_GLOB, true, "t1")).to.deep.equal(["sub-1/anat/a_T1w.nii", "sub-1/anat/b_T1w.nii"]);
  });

  it("decides the archive kind from the URL", () => {
    expect(archiveKindFor("s3://b/x/A_ABCD-MPROC-T1_1.tgz", "auto")).to.equal("tgz");
    expect(archiveKindFor("https://h/x.tar.gz?X-Amz-Signature=abc", "auto")).to.equal("tgz");
    expect(archiveKindFor("s3://b/x.tar", "auto")).to.equal("tar");
    expect(archiveKindFor("s3://b/x.nii.gz", "auto")).to.equal("none");
    expect(archiveKindFor("s3://b/x.nii.gz", "tgz")).to.equal("tgz");
  });
});
