/**
 * Unit level (moto S3 for the leases, stand-in engine edges): `cancel <job>` of one job of a batch
 * (a request file, then SIGUSR2: driver/commands.ts cancelJob) is meant to stop that job only. The batch's other
 * job succeeds and nobody interrupted the batch, yet its exit code says "interrupted" (130).
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { batchExitCode } from "../driver/batch";
import { scheduleJobs } from "../driver/batch-scheduler";
import type { JobEdges, LaunchReply } from "../driver/engine-workers";
import type { ResolvedJob } from "../driver/options";
import type { JobResult } from "../driver/run";
import { newBucket, sharedMoto, testS3 } from "./support/fixtures";
import { kwykSpec } from "./support/job-specs";

describe("batch cancel: one job cancelled (moto S3, stand-in engine edges)", function () {
  this.timeout(60_000);
  let bucket: string;
  const savedHome = process.env.CLOUDCOMPUTE_HOME;
  before(async () => {
    await sharedMoto();
    bucket = await newBucket(testS3(), "cc-cancel-review");
    process.env.CLOUDCOMPUTE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "cc-cancel-review-"));
  });
  after(() => {
    if (savedHome === undefined) delete process.env.CLOUDCOMPUTE_HOME;
    else process.env.CLOUDCOMPUTE_HOME = savedHome;
  });

  it("cancelling one job of a batch does not make the whole batch exit 'interrupted' (130)", async () => {
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-cancel-batch-"));
    const job = (subject: string): ResolvedJob => ({ spec: kwykSpec({ subject, outputs: { prefix: `s3://${bucket}/results` } }), platform: "aws", agentBundlePath: "/nonexistent", allowCrossRegion: false, leaseSeconds: 60, warnings: [] });
    const result = (jobId: string, subject: string, outcome: JobResult["outcome"], exitCode: number): JobResult =>
      ({ jobId, subject, platform: "aws", outcome, exitCode, reason: outcome === "interrupted" ? "interrupted" : undefined, message: outcome, resultsUrl: "", markerUrl: "", logUrl: "", timings: { driver: {}, agent: {} }, attempts: [jobId] }) as JobResult;
    const edges: JobEdges = {
      // What an engine worker does: an interrupt (SIGINT, forwarded on abort) ends its launch as "interrupted".
      launch: async (request, signal): Promise<LaunchReply> => {
        if (request.subject === "sub-keep") return { kind: "ended", result: result(request.jobId, request.subject, "succeeded", 0) };
        fs.mkdirSync(path.join(logDir, "cancel"), { recursive: true });
        fs.writeFileSync(path.join(logDir, "cancel", request.jobId), "");
        process.kill(process.pid, "SIGUSR2"); // as `cancel <job>` does
        await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
        return { kind: "ended", result: result(request.jobId, request.subject, "interrupted", 130) };
      },
      finish: async () => ({ kind: "refused", exitCode: 3, message: "no finish here" }),
    };
    const entries = await scheduleJobs({
      batchId: "batch-cancel-review", logDir, jobs: [job("sub-cancel"), job("sub-keep")], concurrency: 2, engineConcurrency: 2, retries: 0, rerun: true,
      edges, signal: new AbortController().signal, sink: { event: () => undefined, close: () => undefined },
    });
    const ordered = ["sub-cancel", "sub-keep"].map((s) => entries.get(s)!);
    expect(ordered.map((e) => e.outcome)).to.deep.equal(["interrupted", "succeeded"]);
    expect(batchExitCode(ordered, false), "the batch's exit code (it was not interrupted; one job was cancelled)").to.not.equal(130);
  });
});
