/**
 * Review findings on batch resume (driver/batch-resume.ts), unit level against moto S3 with stand-in engine edges
 * (JobEdges: no engine; a `finish` is recorded, as the teardown of the job it names). Each test is a way a resumed
 * batch destroys a healthy running job it should have adopted, or resumes a batch that is not the same one.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { batchKey, resumeJobs, type BatchJournal } from "../driver/batch-resume";
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

describe("batch resume review: adopting running jobs (moto S3, stand-in engine edges)", function () {
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

  const journalOf = (batchId: string, owner: Owner): BatchJournal => ({ kind: "batch-journal", batchId, key: "k", owner, startedAt: new Date().toISOString() });

  it("a second restart (the first resume was itself killed) adopts the job the original run launched, instead of destroying it", async () => {
    // Run A launched the job and was SIGKILLed; run B resumed (its journal now names B) and was killed before it
    // reached this subject (e.g. while it waited for A's engine workers); run C starts within A's lease period.
    const runA = deadOwner(1);
    const runB = deadOwner(2);
    expect([ownerState(runA), ownerState(runB)]).to.deep.equal(["dead", "dead"]);
    const batchId = `batch-review-${n}-a`;
    const { job, record } = await runningJobOf(runA, batchId);
    const { edges, finished } = recordingEdges();
    const resumed = await resumeJobs(journalOf(batchId, runB), [job], edges, () => undefined);
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
    let resumed: Awaited<ReturnType<typeof resumeJobs>> | undefined;
    try {
      resumed = await resumeJobs(journalOf(batchId, runA), [job], edges, () => undefined);
    } finally {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_S3;
      else process.env.AWS_ENDPOINT_URL_S3 = saved;
      await proxy.close();
      for (const a of resumed?.adopted.values() ?? []) await a.lease.release();
    }
    expect(proxy.faults, "the outage was met").to.be.greaterThan(0);
    expect(finished.map((f) => `${f.context.spec.jobId}: ${f.ending.failure?.reason}`), "a running job destroyed over a failed S3 request").to.deep.equal([]);
  });

  it("two starts resuming the same dead batch at once: the job is adopted by one and destroyed by neither", async () => {
    const runA = deadOwner(4);
    const batchId = `batch-review-${n}-c`;
    const { job } = await runningJobOf(runA, batchId);
    const first = recordingEdges();
    const second = recordingEdges();
    const both = await Promise.all([resumeJobs(journalOf(batchId, runA), [job], first.edges, () => undefined), resumeJobs(journalOf(batchId, runA), [job], second.edges, () => undefined)]);
    try {
      expect(both.map((r) => r.adopted.size).reduce((a, b) => a + b), "adopted once").to.equal(1);
      expect([...first.finished, ...second.finished].map((f) => f.context.spec.jobId), "the job the other start adopted was torn down").to.deep.equal([]);
    } finally {
      for (const r of both) for (const a of r.adopted.values()) await a.lease.release();
    }
  });

  it("a batch whose config file changed between the kill and the restart is not 'the same batch' (its key differs)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-key-"));
    const config = path.join(dir, "job.yaml");
    const keyNow = () => batchKey({ workerArgs: ["--config", config], subjects: ["sub-01"], subjectArgs: [[]], rerun: false, cwd: dir });
    fs.writeFileSync(config, "cloudcompute:outputPrefix: s3://lab/run-1\ncloudcompute:region: us-east-1\n");
    const before = keyNow();
    fs.writeFileSync(config, "cloudcompute:outputPrefix: s3://lab/run-2\ncloudcompute:region: eu-west-1\n");
    // Same key: the restart adopts the old jobs but waits on them at the new prefix and region (contextOf rebuilds
    // the spec from this start's config), so their markers and instances are never found.
    expect(keyNow(), "batch key after the config changed").to.not.equal(before);
  });
});
