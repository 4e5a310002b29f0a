/**
 * The per-subject run lease (common/lease.ts) against moto S3, which enforces If-None-Match / If-Match on PutObject
 * and If-Match on DeleteObject: take, renew, release; a live lease refused with its holder; concurrent takers; an
 * expired lease taken over by exactly one; a holder that lost its lease finds out; a SIGKILLed holder's lease expires.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { LeaseHeldError, LeaseLostError, leaseIsFree, readLease, takeLease, type LeaseHolder } from "../common/lease";
import { jobLayout } from "../job/layout";
import { exists, newBucket, sharedMoto, testS3 } from "./support/fixtures";

describe("subject lease (moto S3, conditional writes)", function () {
  this.timeout(60_000);
  let s3: S3Client;
  let bucket: string;
  let n = 0;
  const holder = (jobId: string, pid = 1000): LeaseHolder => ({ user: "alice", host: "lab-ws1", pid, jobId });
  /** A fresh subject's lease location, where the driver puts it. */
  const place = (subject = `NDARINV${String(++n).padStart(8, "0")}`) => ({
    subject,
    location: jobLayout({ jobId: "-", subject, outputs: { prefix: `s3://${bucket}/results` } }).subjectLease,
  });

  before(async () => {
    await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-lease");
  });

  it("takes, renews and releases; the object is gone after release", async () => {
    const { subject, location } = place();
    expect(location.key).to.equal(`results/_cloudcompute/subjects/${subject}/lease.json`);
    const lease = await takeLease({ client: s3, location, subject, holder: holder("job-a"), periodSeconds: 60 });
    const first = await readLease(s3, location);
    expect(first.lease?.holder.jobId).to.equal("job-a");
    expect(Date.parse(first.lease!.expiresAt) - Date.parse(first.lease!.renewedAt)).to.equal(60_000);
    lease.setJob("job-a2", "launch-2");
    await lease.renew();
    const second = await readLease(s3, location);
    expect(second.etag).to.not.equal(first.etag);
    expect(second.lease?.holder).to.include({ jobId: "job-a2", launchId: "launch-2" });
    await lease.release();
    expect(await exists(s3, bucket, location.key)).to.equal(false);
  });

  it("a second taker is refused with who holds it, since when and until when", async () => {
    const { subject, location } = place();
    const lease = await takeLease({ client: s3, location, subject, holder: holder("job-first", 4242), periodSeconds: 60 });
    const err = await takeLease({ client: s3, location, subject, holder: holder("job-second") }).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(LeaseHeldError);
    const message = (err as Error).message;
    expect(message).to.include(`subject ${subject} is being run by alice@lab-ws1 (pid 4242, job job-first) since ${lease.lease.since}`);
    const expires = /if that driver is dead the lease expires at (\S+) /.exec(message)?.[1];
    expect(Math.abs(Date.parse(expires!) - Date.parse(lease.lease.expiresAt)), message).to.be.lessThan(3_000);
    expect(message).to.match(/if that driver is dead the lease expires at /);
    await lease.release();
    const next = await takeLease({ client: s3, location, subject, holder: holder("job-second") });
    expect(next.lease.holder.jobId).to.equal("job-second");
    await next.release();
  });

  it("ten takers at once: exactly one wins, nine are refused naming it", async () => {
    const { subject, location } = place();
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => takeLease({ client: s3, location, subject, holder: holder(`job-${i}`), periodSeconds: 60 })));
    const won = outcomes.filter((o) => o.status === "fulfilled");
    expect(won).to.have.length(1);
    const winner = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof takeLease>>>).value;
    expect((await readLease(s3, location)).lease?.leaseId).to.equal(winner.lease.leaseId);
    for (const o of outcomes.filter((o) => o.status === "rejected")) {
      expect((o as PromiseRejectedResult).reason).to.be.instanceOf(LeaseHeldError);
      expect((o as PromiseRejectedResult).reason.message).to.include(`job ${winner.lease.holder.jobId})`);
    }
    await winner.release();
  });

  /** A lease of a dead holder whose own clock says it expired an hour ago. */
  async function expiredLease(location: { bucket: string; key: string }, subject: string): Promise<void> {
    const old = new Date(Date.now() - 3_600_000);
    const lease = { apiVersion: "cloudcompute/v1", kind: "subject-lease", subject, leaseId: "dead", holder: holder("job-dead", 1), since: old.toISOString(), renewedAt: old.toISOString(), expiresAt: new Date(old.getTime() + 2_000).toISOString(), periodSeconds: 2 };
    await s3.send(new PutObjectCommand({ Bucket: location.bucket, Key: location.key, Body: JSON.stringify(lease) }));
  }

  it("an expired lease is taken over by exactly one of several takers; the old holder's renewal then fails (lease-lost)", async () => {
    const { subject, location } = place();
    // The "old holder" took the lease normally and then did not renew it for longer than its (2 s) period. Expiry is
    // by S3's clock (a taker's own clock cannot make a lease expire: test/lease-faults.test.ts), so wait for real.
    const old = await takeLease({ client: s3, location, subject, holder: holder("job-old"), periodSeconds: 2 });
    await new Promise((r) => setTimeout(r, 4_500));
    expect(leaseIsFree(await readLease(s3, location))).to.equal(true);
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => takeLease({ client: s3, location, subject, holder: holder(`job-new-${i}`), periodSeconds: 60 })));
    expect(outcomes.filter((o) => o.status === "fulfilled")).to.have.length(1);
    expect(outcomes.filter((o) => o.status === "rejected").every((o) => (o as PromiseRejectedResult).reason instanceof LeaseHeldError)).to.equal(true);
    const err = await old.renew().then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(LeaseLostError);
    expect((err as Error).message).to.match(/was taken over by alice@lab-ws1 \(pid 1000, job job-new-\d\)/);
    // Releasing a lost lease leaves the new holder's in place.
    await old.release();
    expect((await readLease(s3, location)).lease?.holder.jobId).to.match(/^job-new-\d$/);
  });

  it("a lease left expired by a dead driver is taken over; an unreadable lease object is replaced conditionally", async () => {
    const { subject, location } = place();
    await expiredLease(location, subject);
    // Its expiresAt passed long ago, but S3 wrote the object just now: not free until a period after that too.
    expect(leaseIsFree(await readLease(s3, location))).to.equal(false);
    await new Promise((r) => setTimeout(r, 4_500));
    const taken = await takeLease({ client: s3, location, subject, holder: holder("job-next") });
    expect((await readLease(s3, location)).lease?.leaseId).to.equal(taken.lease.leaseId);
    await taken.release();
    await s3.send(new PutObjectCommand({ Bucket: location.bucket, Key: location.key, Body: "not json" }));
    const again = await takeLease({ client: s3, location, subject, holder: holder("job-after-junk") });
    await again.release();
  });

  it("keepRenewed reports a takeover once, and stops renewing", async () => {
    const { subject, location } = place();
    const lease = await takeLease({ client: s3, location, subject, holder: holder("job-kept"), periodSeconds: 5 });
    const lost = new Promise<LeaseLostError>((resolve) => lease.keepRenewed(resolve));
    // Another driver overwrites it (as a taker of an expired lease would).
    await s3.send(new PutObjectCommand({ Bucket: location.bucket, Key: location.key, Body: JSON.stringify({ ...lease.lease, leaseId: "thief", holder: holder("job-thief", 7) }) }));
    const err = await lost;
    expect(err.message).to.include("job job-thief");
    expect(lease.lost).to.equal(err);
  });

  it("a driver killed with SIGKILL leaves a lease that is refused until it expires, then taken over", async () => {
    const { subject, location } = place();
    const script = `
      const { takeLease } = require(${JSON.stringify(path.resolve(__dirname, "../common/lease"))});
      const { S3Client } = require("@aws-sdk/client-s3");
      const client = new S3Client({ forcePathStyle: true, region: "us-east-1" });
      takeLease({ client, location: ${JSON.stringify(location)}, subject: ${JSON.stringify(subject)}, holder: { user: "bob", host: "lab-ws2", pid: process.pid, jobId: "job-killed" }, periodSeconds: 3 })
        .then((lease) => { lease.keepRenewed(() => process.exit(9)); setInterval(() => {}, 1000); process.stdout.write("held\\n"); });`;
    const child = spawn(process.execPath, ["-r", "tsx/cjs", "-e", script], { env: process.env, stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (c: Buffer) => c.toString().includes("held") && resolve());
      child.on("exit", (code) => reject(new Error(`holder exited with ${code}`)));
    });
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    const refused = await takeLease({ client: s3, location, subject, holder: holder("job-waiter") }).then(() => undefined, (e: unknown) => e);
    expect(refused, "a fresh lease of a killed driver").to.be.instanceOf(LeaseHeldError);
    expect((refused as Error).message).to.include(`bob@lab-ws2 (pid ${child.pid}, job job-killed)`);
    const left = await readLease(s3, location);
    // Poll until it expires (3 s period): the take that succeeds must come after the dead lease's expiry.
    for (;;) {
      const taken = await takeLease({ client: s3, location, subject, holder: holder("job-waiter") }).catch((e: unknown) => {
        if (e instanceof LeaseHeldError) return undefined;
        throw e;
      });
      if (taken) {
        expect(Date.parse(taken.lease.since)).to.be.greaterThan(Date.parse(left.lease!.expiresAt));
        await taken.release();
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  });
});
