/**
 * A batch bills every attempt (moto S3 for the leases, stand-in engine edges): a subject whose spot attempt was
 * interrupted and retried costs both attempts, and its entry says what spot saved and what the lost attempt cost.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { scheduleJobs } from "../driver/batch-scheduler";
import type { JobEdges, LaunchReply } from "../driver/engine-workers";
import type { ResolvedJob } from "../driver/options";
import type { JobResult } from "../driver/run";
import type { AttemptCost } from "../job/pricing";
import { newBucket, sharedMoto, testS3 } from "./support/fixtures";
import { kwykSpec } from "./support/job-specs";

describe("batch costs: retried attempts are billed (moto S3, stand-in engine edges)", function () {
  this.timeout(60_000);
  let bucket: string;
  const savedHome = process.env.CLOUDCOMPUTE_HOME;
  before(async () => {
    await sharedMoto();
    bucket = await newBucket(testS3(), "cc-batch-costs");
    process.env.CLOUDCOMPUTE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "cc-batch-costs-"));
  });
  after(() => {
    if (savedHome === undefined) delete process.env.CLOUDCOMPUTE_HOME;
    else process.env.CLOUDCOMPUTE_HOME = savedHome;
  });

  it("sums a subject's attempts into its cost, and says what the interruption cost and the net against on demand", async () => {
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-batch-costs-log-"));
    const job = (subject: string): ResolvedJob => ({ spec: kwykSpec({ subject, outputs: { prefix: `s3://${bucket}/results` }, instance: { ...kwykSpec().instance, spot: true } }), platform: "aws", agentBundlePath: "/nonexistent", allowCrossRegion: false, leaseSeconds: 60, warnings: [] });
    const ended = (request: { jobId: string; subject: string }, cost: AttemptCost, failed: boolean): LaunchReply => ({
      kind: "ended",
      result: {
        jobId: request.jobId, subject: request.subject, platform: "aws", outcome: failed ? "failed" : "succeeded", exitCode: failed ? 1 : 0, reason: failed ? "spot-interrupted" : undefined,
        message: "", resultsUrl: "", markerUrl: "", logUrl: "", timings: { driver: {}, agent: {} }, attempts: [request.jobId], costUsd: cost.costUsd, attemptCosts: [cost],
      } as JobResult,
    });
    const launches: Array<{ onDemand: boolean }> = [];
    const edges: JobEdges = {
      // The first attempt is interrupted after a minute at spot prices; the retry, the last, runs on demand.
      launch: async (request): Promise<LaunchReply> => {
        launches.push({ onDemand: Boolean(request.onDemand) });
        return request.attempt === 1
          ? ended(request, { jobId: request.jobId, spot: true, billedSeconds: 60, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" }, true)
          : ended(request, { jobId: request.jobId, spot: false, billedSeconds: 603, costUsd: 0.1286 }, false);
      },
      finish: async () => ({ kind: "refused", exitCode: 3, message: "no finish here" }),
    };
    const entries = await scheduleJobs({
      batchId: "batch-costs", logDir, jobs: [job("sub-spot")], concurrency: 1, engineConcurrency: 1, retries: 1, rerun: true,
      edges, signal: new AbortController().signal, sink: { event: () => undefined, close: () => undefined },
    });
    expect(launches.map((l) => l.onDemand), "the last retry is on demand").to.deep.equal([false, true]);
    const entry = entries.get("sub-spot")!;
    expect(entry.outcome).to.equal("succeeded");
    expect(entry.costUsd, "both attempts are paid").to.equal(0.1336);
    expect(entry.interruptionCostUsd).to.equal(0.005);
    // The only spot attempt was lost: no saving is claimed for it, and the net says the job paid more than on demand.
    expect(entry.spotSavedUsd).to.equal(undefined);
    expect(entry.spotNetSavedUsd).to.equal(-0.005);
    expect(entry.billedSeconds, "every attempt's billed seconds").to.equal(663);

    // A resumed batch relaunching the subject (its earlier attempt was lost while the batch was down) adds the
    // relaunch's cost to the earlier attempt's, read from its record.
    launches.length = 0;
    const resumed = await scheduleJobs({
      batchId: "batch-costs-resumed", logDir, jobs: [job("sub-resumed")], concurrency: 1, engineConcurrency: 1, retries: 1, rerun: true,
      edges: { ...edges, launch: async (request) => ended(request, { jobId: request.jobId, spot: false, billedSeconds: 603, costUsd: 0.1286 }, false) },
      signal: new AbortController().signal, sink: { event: () => undefined, close: () => undefined },
      earlierCosts: new Map([["sub-resumed", [{ jobId: "job-sub-resumed-earlier", spot: true, billedSeconds: 60, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" }]]]),
    });
    expect(resumed.get("sub-resumed")).to.include({ outcome: "succeeded", costUsd: 0.1336, interruptionCostUsd: 0.005 });
  });
});
