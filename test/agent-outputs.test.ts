/**
 * Output upload against a real moto S3 server: multipart and single-part objects, globs, the per-object SHA-256
 * verification (S3's stored checksum against the hashes computed while reading), and retries of transient errors.
 */
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { listOutputFiles, type SkippedLink } from "../agent/output-files";
import { OutputUploadError, uploadOutputs } from "../agent/outputs";
import { expectedS3Sha256 } from "../agent/upload";
import { getBytes, listKeys, newBucket, sharedMoto, testS3 } from "./support/fixtures";

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("agent outputs (moto S3)", function () {
  this.timeout(60_000);
  let s3: S3Client;
  let bucket: string;
  let dir: string;
  const files: Record<string, Buffer> = {};

  before(async () => {
    await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3);
    dir = mkdtempSync(path.join(tmpdir(), "cc-outputs-"));
    files["big.nii.gz"] = Buffer.from(Array.from({ length: 12 * MiB }, (_, i) => (i * 31) % 256));
    files["exact.bin"] = Buffer.alloc(5 * MiB, 3); // exactly one part
    files["stats/volume.txt"] = Buffer.from("1234 mm3\n");
    files["empty.txt"] = Buffer.alloc(0);
    for (let i = 0; i < 20; i++) files[`many/f${i}.txt`] = Buffer.from(`file ${i}\n`);
    files["skip.tmp"] = Buffer.from("not uploaded");
    for (const [rel, body] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      writeFileSync(path.join(dir, rel), body);
    }
    symlinkSync("/etc/hostname", path.join(dir, "link-to-host-file"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("uploads matching files (multipart for big ones) and returns a verified manifest", async () => {
    const progress: number[] = [];
    const result = await uploadOutputs(dir, ["**", "!**/*.tmp"], { bucket, key: "results/SUBJ/" }, {
      partSize: 5 * MiB,
      onProgress: (done) => progress.push(done),
    });
    const expected = Object.keys(files).filter((f) => !f.endsWith(".tmp")).sort();
    expect(result.map((o) => o.key)).to.deep.equal(expected.map((f) => `results/SUBJ/${f}`).sort());
    expect(await listKeys(s3, bucket, "results/SUBJ/")).to.deep.equal(expected.map((f) => `results/SUBJ/${f}`).sort());
    for (const object of result) {
      const rel = object.key.slice("results/SUBJ/".length);
      expect(object.size).to.equal(files[rel].length);
      expect(object.sha256).to.equal(sha256(files[rel]));
      expect(sha256(await getBytes(s3, bucket, object.key))).to.equal(sha256(files[rel]));
    }
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "results/SUBJ/big.nii.gz", ChecksumMode: "ENABLED" }));
    expect(head.ChecksumSHA256, "multipart upload carries SHA-256 part checksums").to.be.a("string");
    expect(progress.at(-1)).to.equal(expected.reduce((s, f) => s + files[f].length, 0));
  });

  it("never follows a symbolic link out of the outputs, and says which it left out", async () => {
    const skipped: SkippedLink[] = [];
    const listed = await listOutputFiles(dir, ["**"], (link) => skipped.push(link));
    expect(listed.map((f) => f.path)).to.not.include("link-to-host-file");
    expect(skipped).to.deep.equal([{ path: "link-to-host-file", target: "/etc/hostname" }]);
  });

  it("uploads links that stay inside the outputs (FreeSurfer's surf/lh.white -> lh.white.preaparc) as their target, and survives link cycles", async () => {
    const out = mkdtempSync(path.join(tmpdir(), "cc-links-"));
    try {
      mkdirSync(path.join(out, "surf"));
      writeFileSync(path.join(out, "surf", "lh.white.preaparc"), "surface\n");
      symlinkSync("lh.white.preaparc", path.join(out, "surf", "lh.white"));
      symlinkSync("surf", path.join(out, "surf-alias")); // a directory link: listed under its own name too, as a copy would
      symlinkSync("..", path.join(out, "surf", "up")); // a cycle back to the top
      symlinkSync("/usr/share", path.join(out, "fsaverage")); // outside: left out, reported
      symlinkSync("missing-target", path.join(out, "dangling"));
      const skipped: SkippedLink[] = [];
      const listed = await listOutputFiles(out, ["**"], (link) => skipped.push(link));
      expect(listed.map((f) => f.path)).to.deep.equal(["surf-alias/lh.white", "surf-alias/lh.white.preaparc", "surf/lh.white", "surf/lh.white.preaparc"]);
      expect(listed.find((f) => f.path === "surf/lh.white")!.size).to.equal("surface\n".length);
      expect(skipped.map((l) => l.path).sort()).to.deep.equal(["dangling", "fsaverage"]);
      const uploaded = await uploadOutputs(out, ["**"], { bucket, key: "results/LINKS/" });
      expect(uploaded.map((o) => o.key)).to.deep.equal(["results/LINKS/surf-alias/lh.white", "results/LINKS/surf-alias/lh.white.preaparc", "results/LINKS/surf/lh.white", "results/LINKS/surf/lh.white.preaparc"]);
      expect((await getBytes(s3, bucket, "results/LINKS/surf/lh.white")).toString()).to.equal("surface\n");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("computes S3's composite checksum the way S3 does", () => {
    const parts = [Buffer.from("a"), Buffer.from("b")].map((b) => createHash("sha256").update(b).digest());
    expect(expectedS3Sha256([parts[0]])).to.equal(parts[0].toString("base64"));
    expect(expectedS3Sha256(parts)).to.equal(createHash("sha256").update(Buffer.concat(parts)).digest("base64"));
  });

  it("retries a transient failure and still verifies the object", async () => {
    const flaky = new S3Client({ forcePathStyle: true, region: "us-east-1", maxAttempts: 1 });
    let failures = 0;
    // The first UploadPart dies like a reset connection, after the SDK's own retries are out of the way (maxAttempts 1).
    flaky.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === "UploadPartCommand" && failures === 0) {
          failures++;
          throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
        }
        return next(args);
      },
      { step: "finalizeRequest", name: "injectReset" },
    );
    const lines: string[] = [];
    const result = await uploadOutputs(dir, ["big.nii.gz"], { bucket, key: "retry/" }, {
      client: flaky,
      partSize: 5 * MiB,
      retryBaseDelayMs: 10,
      log: (line) => lines.push(line),
    });
    expect(failures).to.equal(1);
    expect(lines.join("\n")).to.match(/retrying/);
    expect(sha256(await getBytes(s3, bucket, "retry/big.nii.gz"))).to.equal(result[0].sha256);
  });

  it("fails with output-upload-failed and lists what did arrive", async () => {
    const denied = new S3Client({ forcePathStyle: true, region: "us-east-1", maxAttempts: 1 });
    denied.middlewareStack.add(
      (next, context) => async (args) => {
        const key = (args.input as { Key?: string }).Key ?? "";
        if (context.commandName === "PutObjectCommand" && key.endsWith("volume.txt")) {
          throw Object.assign(new Error("Access Denied"), { name: "AccessDenied", $metadata: { httpStatusCode: 403 } });
        }
        return next(args);
      },
      { step: "initialize", name: "denyOne" },
    );
    let error: unknown;
    try {
      await uploadOutputs(dir, ["stats/**", "many/f1.txt"], { bucket, key: "denied/" }, { client: denied, fileConcurrency: 1 });
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(OutputUploadError);
    const failure = error as OutputUploadError;
    expect(failure.reason).to.equal("output-upload-failed");
    expect(failure.uploaded.every((o) => !o.key.endsWith("volume.txt"))).to.equal(true);
  });
});
