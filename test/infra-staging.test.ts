/**
 * The staging provider (infra/staging.ts) against moto S3, called as the engine calls it: a second `pulumi up` of a
 * job stack is a new launch whose staging replaces the old one create-before-delete, on the same spec.json key. The
 * old staging's delete must leave the new launch's spec alone (else its instance boots to a missing spec), and the
 * last delete removes the spec with its secrets.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { GetObjectCommand, ListObjectVersionsCommand, PutBucketVersioningCommand } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { stagingProvider, type StagingInputs, type StagingOutputs } from "../infra/staging";
import { getBytes, newBucket, sharedMoto, testS3 } from "./support/fixtures";

/** Staging inputs for one launch of `jobId` in `bucket`, with a bundle of its own; the spec holds a fake secret. */
function stagingInputsFor(bucket: string, jobId: string): (launchId: string) => StagingInputs {
  const bundle = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cc-staging-")), "agent.js");
  fs.writeFileSync(bundle, "console.log('agent')\n");
  const sha = createHash("sha256").update(fs.readFileSync(bundle)).digest("hex");
  return (launchId) => ({
    specJson: JSON.stringify({ jobId, launchId, secret: `presigned-${launchId}` }),
    specBucket: bucket,
    specKey: `results/_cloudcompute/${jobId}/spec.json`,
    agentBucket: bucket,
    agentKey: `results/_cloudcompute/agent/${sha}.js`,
    agentSha256: sha,
    agentBundlePath: bundle,
    region: "us-east-1",
    pathStyle: true,
    staleKeys: [],
  });
}

describe("staging: a replaced launch's delete keeps the new launch's spec", function () {
  this.timeout(60_000);

  it("create A, create B (replacement), delete A: B's spec stays; delete B: gone", async () => {
    await sharedMoto();
    const s3 = testS3();
    const bucket = await newBucket(s3, "cc-staging");
    const inputsFor = stagingInputsFor(bucket, "job-twice");
    const specOnS3 = async () => JSON.parse((await getBytes(s3, bucket, "results/_cloudcompute/job-twice/spec.json")).toString()) as { launchId: string };

    const a = await stagingProvider.create!(inputsFor("launch-a"));
    const b = await stagingProvider.create!(inputsFor("launch-b"));
    expect((await specOnS3()).launchId).to.equal("launch-b");
    await stagingProvider.delete!(a.id, a.outs as StagingOutputs);
    expect((await specOnS3()).launchId, "the new launch's spec after the old staging's delete").to.equal("launch-b");
    await stagingProvider.delete!(b.id, b.outs as StagingOutputs);
    const gone = await getBytes(s3, bucket, "results/_cloudcompute/job-twice/spec.json").then(() => false, () => true);
    expect(gone, "spec.json deleted with the last launch").to.equal(true);
    // A delete of an already deleted spec is a no-op, not an error (a retried destroy).
    await stagingProvider.delete!(b.id, b.outs as StagingOutputs);
  });

  it("on a versioned bucket, no version of a spec (its secrets) survives the job; the newer launch's versions stay until its own end", async () => {
    await sharedMoto();
    const s3 = testS3();
    const bucket = await newBucket(s3, "cc-staging-versioned");
    await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }));
    const key = "results/_cloudcompute/job-versioned/spec.json";
    const inputsFor = stagingInputsFor(bucket, "job-versioned");
    const versionsHolding = async () => {
      const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
      const bodies = await Promise.all(
        (listed.Versions ?? []).map(async (v) => (await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: v.VersionId }))).Body!.transformToString())),
      );
      return bodies.map((body) => JSON.parse(body).launchId as string).sort();
    };
    const a = await stagingProvider.create!(inputsFor("launch-a"));
    const b = await stagingProvider.create!(inputsFor("launch-b"));
    expect(await versionsHolding()).to.deep.equal(["launch-a", "launch-b"]);
    await stagingProvider.delete!(a.id, a.outs as StagingOutputs);
    expect(await versionsHolding(), "after the old launch's delete").to.deep.equal(["launch-b"]);
    await stagingProvider.delete!(b.id, b.outs as StagingOutputs);
    expect(await versionsHolding(), "after the last launch's delete").to.deep.equal([]);
  });
});
