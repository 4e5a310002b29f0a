/**
 * Attacks on batch resume (driver/batch-resume.ts), unit level against moto S3 with stand-in engine edges
 * (JobEdges: no engine; a `finish` is recorded, as the teardown of the job it names). Each test is a way a resumed
 * batch destroys a healthy running job it should have adopted, or resumes a batch that is not the same one.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { batchKey, claimResumable, releaseBatch, resumeJobs, writeJournal, type BatchJournal } from "../driver/batch-resume";
import type { FinishRequest, JobEdges } from "../driver/engine-workers";
import { writeJobRecord, type JobRecord } from "../driver/jobindex";
import type { ResolvedJob } from "../driver/options";
import { ownerState, thisHost, type Owner } from "../driver/owner";
import type { JobResult } from "../driver/run";
import { jobLayout, makeJobId } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { newBucket, sharedMoto, testS3 } from "./support/fixtures";
import { kwykSpec } from "./support/job-specs";
import { startFaultProxy } from "./support/fault-proxy";

/** An owner on this host whose process is provably gone (no such PID). */
function deadOwner(seed: number): Owner {
  const max = Number(fs.readFileSync("/proc/sys/kernel/pid_max", "utf8"));
  for (let pid = max - 1 - seed * 97; pid > 1; pid--) {
    if (!fs.existsSync(`/proc/${pid}`)) return { host: thisHost(), pid, pidStart: `deadbeef:${pid}` };
  }
  throw new Error("no free pid");
}

describe("batch resume: adopting running jobs (moto S3, stand-in engine edges)", function () {
  this.timeout(120_000);
  let s3: S3Client;
  let bucket: string;
  let n = 0;
  const savedHome = process.env.CLOUDCOMPUTE_HOME;

  before(async () => {
    await sharedMoto();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-resume-review");
    process.env.CLOUDCOMPUTE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "cc-resume-review-"));
  });
  after(() => {
    if (savedHome === undefined) delete process.env.CLOUDCOMPUTE_HOME;
    else process.env.CLOUDCOMPUTE_HOME = savedHome;
  });

  function recordingEdges(): { edges: JobEdges; finished: FinishRequest[] } {
    const finished: FinishRequest[] = [];
    const edges: JobEdges = {
      launch: async () => ({ kind: "refused", exitCode: 3, message: "no launch in these tests" }),
      finish: async (request) => {
        finished.push(request);
        const spec = request.context.spec;
        return { kind: "finished", result: { jobId: spec.jobId, subject: spec.subject, platform: "aws", outcome: "error", exitCode: 3, reason: request.ending.failure?.reason, message: "torn down", resultsUrl: "", markerUrl: "", logUrl: "", timings: { driver: {}, agent: {} }, attempts: [spec.jobId] } as JobResult };
      },
    };
    return { edges, finished };
  }

  /**
   * A batch run `launcher` started: its job for a fresh subject is running (record "running"), and the subject's
   * lease names `launcher` and the job, live (as it is for a lease period after `launcher` died).
   */
  async function runningJobOf(launcher: Owner, batchId: string): Promise<{ job: ResolvedJob; record: JobRecord }> {
    const subject = `NDARINVREV${String(++n).padStart(5, "0")}`;
    const jobId = makeJobId(subject);
    const launchId = `launch-${n}`;
    const spec = { ...kwykSpec({ subject, outputs: { prefix: `s3://${bucket}/results` } }), jobId, launchId };
    const layout = jobLayout(spec);
    const now = new Date();
    const record: JobRecord = {
      jobId, subject, platform: "aws", backend: "file:///nowhere", state: "running", createdAt: now.toISOString(),
      driverPid: launcher.pid, driverHost: launcher.host, driverPidStart: launcher.pidStart, region: "us-east-1",
      markerUrl: formatS3Url(layout.marker), resultsUrl: formatS3Url(layout.results), statusUrl: formatS3Url(layout.status), logUrl: formatS3Url(layout.log),
      instanceId: "i-0123456789abcdef0", runningAt: now.toISOString(), launchId, attempt: 1, batchId,
    };
    writeJobRecord(record);
    const lease = {
      apiVersion: "cloudcompute/v1", kind: "subject-lease", subject, leaseId: `lease-${n}`, periodSeconds: 300,
      holder: { user: os.userInfo().username, host: launcher.host, pid: launcher.pid, pidStart: launcher.pidStart, jobId, launchId },
      since: now.toISOString(), renewedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString(),
    };
    const loc = layout.subjectLease;
    await s3.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: JSON.stringify(lease) }));
    const job: ResolvedJob = { spec, platform: "aws", agentBundlePath: "/nonexistent/agent.tgz", allowCrossRegion: false, leaseSeconds: 300, warnings: [] };
    return { job, record };
  }

  const journalOf = (batchId: string, owner: Owner, owners?: Owner[]): BatchJournal => ({ kind: "batch-journal", batchId, key: "k", owner, owners, startedAt: new Date().toISOString() });

  it("a second restart (the first resume was itself killed) adopts the job the original run launched, instead of destroying it", async () => {
    // Run A launched the job and was SIGKILLed; run B resumed (its journal now names B) and was killed before it
    // reached this subject (e.g. while it waited for A's engine workers); run C starts within A's lease period.
    const runA = deadOwner(1);
    const runB = deadOwner(2);
    expect([ownerState(runA), ownerState(runB)]).to.deep.equal(["dead", "dead"]);
    const batchId = `batch-review-${n}-a`;
    const { job, record } = await runningJobOf(runA, batchId);
    const { edges, finished } = recordingEdges();
    // The journal names every process that ran the batch (runBatch appends each resuming one).
    const resumed = await resumeJobs(journalOf(batchId, runB, [runA, runB]), [job], edges, () => undefined);
    try {
      expect(finished.map((f) => f.context.spec.jobId), "the healthy running job was torn down").to.deep.equal([]);
      expect([...resumed.adopted.keys()]).to.deep.equal([record.subject]);
    } finally {
      for (const a of resumed.adopted.values()) await a.lease.release();
    }
  });

  it("an S3 outage while taking over an adopted job's lease does not destroy the running job", async () => {
    const runA = deadOwner(3);
    const batchId = `batch-review-${n}-b`;
    const { job } = await runningJobOf(runA, batchId);
    const moto = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL!;
    const proxy = await startFaultProxy(moto);
    const saved = process.env.AWS_ENDPOINT_URL_S3;
    process.env.AWS_ENDPOINT_URL_S3 = proxy.endpoint;
    proxy.set("http-503", /lease\.json/);
    const { edges, finished } = recordingEdges();
    let refusal: unknown;
    try {
      await resumeJobs(journalOf(batchId, runA), [job], edges, () => undefined);
    } catch (err) {
      refusal = err;
    } finally {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_S3;
      else process.env.AWS_ENDPOINT_URL_S3 = saved;
      await proxy.close();
    }
    expect(proxy.faults, "the outage was met").to.be.greaterThan(0);
    expect(finished.map((f) => `${f.context.spec.jobId}: ${f.ending.failure?.reason}`), "a running job destroyed over a failed S3 request").to.deep.equal([]);
    // The resume stops and says so; the job runs on, and a later start adopts it.
    expect(String(refusal)).to.match(/nothing was torn down — start the batch again/);
  });

  it("two starts resuming the same dead batch at once: exactly one claims it; the other starts a batch of its own", () => {
    const runA = deadOwner(4);
    const batchId = `batch-review-${n}-c`;
    const dir = path.join(process.env.CLOUDCOMPUTE_HOME!, "batches", batchId);
    fs.mkdirSync(dir, { recursive: true });
    writeJournal(dir, { kind: "batch-journal", batchId, key: "key-of-c", owner: runA, owners: [runA], startedAt: new Date().toISOString() });
    const claims = [claimResumable("key-of-c"), claimResumable("key-of-c")];
    expect(claims.map((c) => c?.batchId)).to.deep.equal([batchId, undefined]);
    releaseBatch(dir);
    expect(claimResumable("key-of-c")?.batchId, "claimable again once released").to.equal(batchId);
  });

  it("a batch whose config changed between the kill and the restart is not 'the same batch' (its key differs)", () => {
    // The key is made of the jobs as resolved, not the command line: the same `--config job.yaml` with another prefix
    // or region in the file is another batch, never one that waits on old jobs at the new prefix and region.
    const job = (prefix: string, region: string, jobId: string): ResolvedJob => {
      const spec = kwykSpec({ subject: "sub-01", outputs: { prefix } });
      return { spec: { ...spec, jobId, instance: { ...spec.instance, region } }, platform: "aws", agentBundlePath: "/nonexistent", allowCrossRegion: false, leaseSeconds: 300, warnings: [] };
    };
    const before = batchKey([job("s3://lab/run-1", "us-east-1", "job-sub-01-a")], false);
    expect(batchKey([job("s3://lab/run-1", "us-east-1", "job-sub-01-b")], false), "fresh job ids: the same batch").to.equal(before);
    expect(batchKey([job("s3://lab/run-2", "eu-west-1", "job-sub-01-c")], false), "another prefix and region").to.not.equal(before);
    expect(batchKey([job("s3://lab/run-1", "us-east-1", "job-sub-01-d")], true), "--rerun").to.not.equal(before);
  });
});
