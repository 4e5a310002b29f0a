/**
 * The subject lease under bad luck, against moto S3 through a real TCP proxy that can refuse or black-hole
 * connections: drivers whose clocks are minutes off S3's, a malformed lease, a renewal that fails for a while (the
 * lease survives) or for longer than the period (the holder finds out when its lease expires, not never).
 */
import { expect } from "chai";
import * as net from "node:net";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { LeaseHeldError, LeaseLostError, readLease, takeLease, type LeaseHolder } from "../common/lease";
import { jobLayout } from "../job/layout";
import { newBucket, sharedMoto, testS3 } from "./support/fixtures";

/** A TCP proxy to moto: "up" forwards, "refuse" resets every connection, "hang" accepts and never answers. */
async function startProxy(target: URL): Promise<{ url: string; mode: "up" | "refuse" | "hang"; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { mode: "up" as "up" | "refuse" | "hang" };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    if (state.mode === "refuse") return void client.destroy();
    if (state.mode === "hang") return;
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.on("error", () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("subject lease faults (moto S3 behind a faulty proxy)", function () {
  this.timeout(60_000);
  let s3: S3Client;
  let bucket: string;
  let n = 0;
  const holder = (jobId: string): LeaseHolder => ({ user: "alice", host: "lab-ws1", pid: 1000, jobId });
  const place = (subject = `NDARFAULT${String(++n).padStart(4, "0")}`) => ({
    subject,
    location: jobLayout({ jobId: "-", subject, outputs: { prefix: `s3://${bucket}/results` } }).subjectLease,
  });

  before(async () => {
    await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-lease-faults");
  });

  it("a taker whose clock runs 10 minutes ahead of S3 is refused a lease renewed a moment ago", async () => {
    const { subject, location } = place();
    const live = await takeLease({ client: s3, location, subject, holder: holder("job-live"), periodSeconds: 60 });
    await live.renew();
    const ahead = () => new Date(Date.now() + 10 * 60_000);
    const err = await takeLease({ client: s3, location, subject, holder: holder("job-skewed"), now: ahead }).then(() => undefined, (e: unknown) => e);
    expect(err, "a live lease must not look expired to a fast clock").to.be.instanceOf(LeaseHeldError);
    expect((await readLease(s3, location)).lease?.leaseId).to.equal(live.lease.leaseId);
    await live.release();
  });

  it("a taker whose clock runs 10 minutes behind S3 takes a lease that did expire (by S3's clock)", async () => {
    const { subject, location } = place();
    await takeLease({ client: s3, location, subject, holder: holder("job-dead"), periodSeconds: 2 });
    await sleep(4_500);
    const behind = () => new Date(Date.now() - 10 * 60_000);
    const taken = await takeLease({ client: s3, location, subject, holder: holder("job-slow-clock"), now: behind });
    expect((await readLease(s3, location)).lease?.leaseId).to.equal(taken.lease.leaseId);
    await taken.release();
  });

  it("a malformed lease (no period, an expiry that is no date) does not block the subject forever", async () => {
    const { subject, location } = place();
    const bad = { apiVersion: "cloudcompute/v1", kind: "subject-lease", subject, leaseId: "odd", holder: holder("job-odd"), since: "x", renewedAt: "x", expiresAt: "soon" };
    await s3.send(new PutObjectCommand({ Bucket: location.bucket, Key: location.key, Body: JSON.stringify(bad) }));
    const taken = await takeLease({ client: s3, location, subject, holder: holder("job-after-odd") });
    await taken.release();
  });

  it("the refusal dates a live lease by S3's clock, not by its holder's clock 10 minutes behind (it does not look abandoned)", async () => {
    const { subject, location } = place();
    const behind = () => new Date(Date.now() - 10 * 60_000);
    const live = await takeLease({ client: s3, location, subject, holder: holder("job-late-clock"), periodSeconds: 60, now: behind });
    const err = (await takeLease({ client: s3, location, subject, holder: holder("job-next") }).then(() => undefined, (e: unknown) => e)) as Error;
    expect(err).to.be.instanceOf(LeaseHeldError);
    const ago = Number(/renewed (\d+) s ago/.exec(err.message)?.[1]);
    expect(ago, err.message).to.be.lessThan(5);
    const expires = /if that driver is dead the lease expires at (\S+) /.exec(err.message)?.[1];
    expect(Date.parse(expires!), err.message).to.be.greaterThan(Date.now() + 50_000);
    await live.release();
  });

  describe("renewals through a proxy", () => {
    let proxy: Awaited<ReturnType<typeof startProxy>>;
    let client: S3Client;
    beforeEach(async () => {
      proxy = await startProxy(new URL((await sharedMoto()).env.AWS_ENDPOINT_URL as string));
      client = new S3Client({ forcePathStyle: true, region: "us-east-1", endpoint: proxy.url, maxAttempts: 1 });
    });
    afterEach(async () => {
      client.destroy();
      await proxy.close();
    });

    it("a network drop shorter than the period does not lose the lease", async () => {
      const { subject, location } = place();
      const lease = await takeLease({ client, location, subject, holder: holder("job-flaky"), periodSeconds: 6 });
      const lost: LeaseLostError[] = [];
      lease.keepRenewed((err) => lost.push(err));
      proxy.mode = "refuse";
      await sleep(2_500);
      proxy.mode = "up";
      await sleep(3_000);
      expect(lost, "one failed renewal must not tear a healthy job down").to.deep.equal([]);
      const read = await readLease(s3, location);
      expect(read.lease?.leaseId).to.equal(lease.lease.leaseId);
      expect(Date.parse(read.lease!.renewedAt)).to.be.greaterThan(Date.now() - 2_500);
      await lease.release();
      expect((await readLease(s3, location)).etag).to.equal(undefined);
    });

    it("confirm() before an attempt: a network blip while the lease is live is no failure; after its expiry it is lost", async () => {
      const { subject, location } = place();
      const lease = await takeLease({ client, location, subject, holder: holder("job-confirm"), periodSeconds: 3 });
      proxy.mode = "refuse";
      await lease.confirm();
      await sleep(3_200);
      const err = await lease.confirm().then(() => undefined, (e: unknown) => e);
      expect(err).to.be.instanceOf(LeaseLostError);
      expect(lease.lost).to.equal(err);
    });

    for (const mode of ["refuse", "hang"] as const) {
      it(`renewals that ${mode === "refuse" ? "fail" : "hang"} for longer than the period: the holder learns its lease expired, and release returns`, async () => {
        const { subject, location } = place();
        const lease = await takeLease({ client, location, subject, holder: holder(`job-${mode}`), periodSeconds: 4 });
        const t0 = Date.now();
        const lost = new Promise<LeaseLostError>((resolve) => lease.keepRenewed(resolve));
        proxy.mode = mode;
        const err = await Promise.race([lost, sleep(12_000).then(() => undefined)]);
        expect(err, "the holder must stop trusting a lease it could not renew for a whole period").to.be.instanceOf(LeaseLostError);
        expect(Date.now() - t0).to.be.lessThan(9_000);
        expect(err!.message).to.match(/could not be renewed/);
        expect(lease.lost).to.equal(err);
        const released = await Promise.race([lease.release().then(() => "released"), sleep(5_000).then(() => "hung")]);
        expect(released).to.equal("released");
      });
    }
  });
});
