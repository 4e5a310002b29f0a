/**
 * Promotion into a subject's results under contention (moto S3, which honours If-Match / If-None-Match): two jobs of
 * one subject promoting at once (two batches, two lab members on one prefix) never leave a mix; a lease left by a
 * dead job is taken over once stale; a live one is waited for, and given up on with the results untouched.
 */
import { expect } from "chai";
import { CopyObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { promoteResults } from "../agent/promote";
import type { OutputObject } from "../job/records";
import { getBytes, getJson, listKeys, newBucket, sharedMoto, testS3 } from "./support/fixtures";

describe("promotion under contention (moto S3)", function () {
  this.timeout(60_000);
  let s3: S3Client;
  let bucket: string;

  before(async () => {
    await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-promote");
  });

  /** Stage a job's outputs in its own area, as the upload does; returns them as the upload would. */
  async function staged(jobId: string, files: Record<string, string>): Promise<OutputObject[]> {
    const objects: OutputObject[] = [];
    for (const [name, body] of Object.entries(files)) {
      const key = `results/_cloudcompute/${jobId}/outputs/${name}`;
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
      objects.push({ key, size: body.length, sha256: "-" });
    }
    return objects;
  }
  const promote = (subject: string, jobId: string, uploaded: OutputObject[], extra: Record<string, number> = {}) =>
    promoteResults(
      uploaded,
      { bucket, key: `results/_cloudcompute/${jobId}/outputs/` },
      { bucket, key: `results/${subject}/` },
      { bucket, key: `results/_cloudcompute/subjects/${subject}/results.json` },
      { client: s3, jobId, launchId: `launch-${jobId}`, leasePollMs: 50, ...extra },
    );

  it("two jobs of one subject promoting at once: one after the other, the results exactly the last one's set", async () => {
    const a = await staged("job-a", { "a-only.txt": "A", "shared.txt": "from A", "more/a.txt": "A" });
    const b = await staged("job-b", { "b-only.txt": "B", "shared.txt": "from B" });
    const outcomes = await Promise.allSettled([promote("sub-race", "job-a", a), promote("sub-race", "job-b", b)]);
    expect(outcomes.map((o) => o.status)).to.deep.equal(["fulfilled", "fulfilled"]);
    const pointer = await getJson<{ jobId: string; complete: boolean; objects: Array<{ key: string }> }>(s3, bucket, "results/_cloudcompute/subjects/sub-race/results.json");
    expect(pointer.complete).to.equal(true);
    const keys = await listKeys(s3, bucket, "results/sub-race/");
    expect(keys, `results of ${pointer.jobId}`).to.deep.equal(pointer.objects.map((o) => o.key).sort());
    const expected = pointer.jobId === "job-a" ? ["a-only.txt", "more/a.txt", "shared.txt"] : ["b-only.txt", "shared.txt"];
    expect(keys).to.deep.equal(expected.map((k) => `results/sub-race/${k}`));
    expect((await getBytes(s3, bucket, "results/sub-race/shared.txt")).toString()).to.equal(pointer.jobId === "job-a" ? "from A" : "from B");
  });

  it("a lease left by a dead job is taken over once stale, and everything either job wrote is cleaned", async () => {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "results/sub-stale/left-by-dead.txt", Body: "x" }));
    const dead = { apiVersion: "cloudcompute/v1", jobId: "job-dead", promotedAt: new Date(Date.now() - 3_600_000).toISOString(), complete: false, objects: [{ key: "results/sub-stale/left-by-dead.txt", size: 1, sha256: "-" }] };
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "results/_cloudcompute/subjects/sub-stale/results.json", Body: JSON.stringify(dead) }));
    const c = await staged("job-c", { "c.txt": "C" });
    // Staleness is judged by S3's LastModified (not the dead writer's promotedAt): a 1 s lease, written 1.5 s ago.
    await new Promise((r) => setTimeout(r, 1500));
    await promote("sub-stale", "job-c", c, { leaseMs: 1000 });
    expect(await listKeys(s3, bucket, "results/sub-stale/")).to.deep.equal(["results/sub-stale/c.txt"]);
    expect(await getJson(s3, bucket, "results/_cloudcompute/subjects/sub-stale/results.json")).to.include({ jobId: "job-c", complete: true });
  });

  it("a holder whose lease is taken over mid-copy (a slow promotion) stops at its next renewal and deletes nothing", async () => {
    const e = await staged("job-slow", { "slow.txt": "S" });
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "results/sub-taken/theirs.txt", Body: "T" }));
    // A client whose copies take 2.5 s: long enough for a renewal (every second with a 1 s lease here) to come due.
    const slow = Object.create(s3) as S3Client;
    slow.send = (async (command: unknown, options?: unknown) => {
      if (command instanceof CopyObjectCommand) await new Promise((r) => setTimeout(r, 2500));
      return (s3.send as (c: unknown, o?: unknown) => Promise<unknown>)(command, options);
    }) as S3Client["send"];
    const running = promoteResults(
      e,
      { bucket, key: "results/_cloudcompute/job-slow/outputs/" },
      { bucket, key: "results/sub-taken/" },
      { bucket, key: "results/_cloudcompute/subjects/sub-taken/results.json" },
      { client: slow, jobId: "job-slow", leaseMs: 1000, leasePollMs: 50 },
    ).then(() => undefined, (err: Error) => err);
    await new Promise((r) => setTimeout(r, 300));
    // Another job takes the subject over (as it would once the lease looked stale to it).
    const taker = { apiVersion: "cloudcompute/v1", jobId: "job-taker", leaseId: "taker", promotedAt: new Date().toISOString(), complete: true, objects: [{ key: "results/sub-taken/theirs.txt", size: 1, sha256: "-" }] };
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "results/_cloudcompute/subjects/sub-taken/results.json", Body: JSON.stringify(taker) }));
    const failed = await running;
    expect(failed?.message).to.match(/another job took over the subject's results/);
    expect(await listKeys(s3, bucket, "results/sub-taken/")).to.include("results/sub-taken/theirs.txt");
    expect(await getJson(s3, bucket, "results/_cloudcompute/subjects/sub-taken/results.json")).to.include({ jobId: "job-taker", complete: true });
  });

  it("a live lease is waited for; past the wait the job fails with the results untouched", async () => {
    const live = { apiVersion: "cloudcompute/v1", jobId: "job-live", promotedAt: new Date().toISOString(), complete: false, objects: [] };
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "results/_cloudcompute/subjects/sub-live/results.json", Body: JSON.stringify(live) }));
    const d = await staged("job-d", { "d.txt": "D" });
    const failed = await promote("sub-live", "job-d", d, { leaseWaitMs: 300 }).then(() => undefined, (err: Error) => err);
    expect(failed?.message).to.match(/job job-live is promoting results of this subject/);
    expect(await listKeys(s3, bucket, "results/sub-live/")).to.deep.equal([]);
    expect(await getJson(s3, bucket, "results/_cloudcompute/subjects/sub-live/results.json")).to.include({ jobId: "job-live" });
  });
});
