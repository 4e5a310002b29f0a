/**
 * The driver side of `npm run bench -- scale`'s memory figure, run as its own process (bundled by esbuild, run by
 * plain node, so nothing but the batch is in its tree): resolves each subject's local-platform job as the batch
 * command does, then calls the real `runBatch` with stand-ins for the engine phases. A launch hands the job to the
 * stand-in compute (sandbox/stand-in-compute.ts, another process tree) and returns it running on that process; a
 * finish builds the job's result from how the wait ended, without an engine. Everything else — leases, the paced
 * waits on S3 and on the compute, events, the summary — is the batch's own.
 *
 * Input: SCALE_DRIVER (JSON: config, subjects, standInUrl, standInPid, concurrency, engineConcurrency) in the env.
 * Output: JSON lines on stdout — {phase:"resolved"} (then it waits for a line on stdin, so that the baseline is
 * sampled), {phase:"all-in-flight"}, {phase:"first-done"}, and last {phase:"result", ...}.
 */
import * as http from "node:http";
import * as readline from "node:readline";
import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { processFingerprint } from "../infra/local";
import { runBatch } from "../driver/batch";
import type { BatchEvent } from "../driver/batch-events";
import type { JobEdges } from "../driver/engine-workers";
import { failureOfWait } from "../driver/job-outcomes";
import { resolvePackageJob } from "../driver/nda-package";
import type { ResolvedJob } from "../driver/options";
import type { JobResult } from "../driver/run";
import { ExitCode } from "../driver/errors";

export interface ScaleDriverInput {
  config: string;
  subjects: string[];
  standInUrl: string;
  standInPid: number;
  concurrency: number;
  engineConcurrency: number;
}

export interface ScaleDriverResult {
  phase: "result";
  jobs: number;
  succeeded: number;
  outcomes: Record<string, number>;
  exitCode: number;
  /** The most jobs running (job-running seen, job-done not yet) at once. */
  maxInFlight: number;
  resolveSeconds: number;
  /** From the batch's start until every job was running, until the first was done, and the whole batch. */
  allInFlightSeconds?: number;
  firstDoneSeconds?: number;
  batchSeconds: number;
}

const say = (line: object) => process.stdout.write(JSON.stringify(line) + "\n");

function post(agent: http.Agent, url: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 204 ? resolve() : reject(new Error(`the stand-in compute answered ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/** Launch on the stand-in compute; finish from the wait's ending. */
function standInEdges(input: ScaleDriverInput, bySubject: Map<string, ResolvedJob>): JobEdges {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const fingerprint = processFingerprint(input.standInPid);
  if (!fingerprint) throw new Error(`the stand-in compute (pid ${input.standInPid}) is not running`);
  const instanceId = `${input.standInPid}:${fingerprint}`;
  return {
    async launch(request) {
      const resolved = bySubject.get(request.subject)!;
      const spec = { ...resolved.spec, jobId: request.jobId, launchId: request.launchId };
      const layout = jobLayout(spec);
      const t0 = Date.now();
      await post(agent, `${input.standInUrl}/jobs`, { bucket: layout.status.bucket, statusKey: layout.status.key, markerKey: layout.marker.key, resultsPrefix: formatS3Url(layout.results), jobId: spec.jobId, launchId: spec.launchId, subject: spec.subject });
      const record = {
        jobId: spec.jobId, subject: spec.subject, platform: resolved.platform, backend: resolved.backend ?? "", state: "running" as const, createdAt: new Date(t0).toISOString(),
        markerUrl: formatS3Url(layout.marker), resultsUrl: formatS3Url(layout.results), statusUrl: formatS3Url(layout.status), logUrl: formatS3Url(layout.log), instanceId, launchId: spec.launchId, attempt: request.attempt,
      };
      return { kind: "running", context: { spec, platform: resolved.platform, backend: resolved.backend, agentBundlePath: resolved.agentBundlePath, record, t0, computeStartedAt: Date.now(), instanceId, driverTimings: {} } };
    },
    async finish({ context, ending }) {
      const failure = ending.failure ?? (ending.wait ? failureOfWait(ending.wait) : undefined);
      const layout = jobLayout(context.spec);
      const result: JobResult = {
        jobId: context.spec.jobId, subject: context.spec.subject, platform: context.platform,
        outcome: failure?.outcome ?? "succeeded", exitCode: failure?.exitCode ?? ExitCode.ok, reason: failure?.reason, message: failure?.message ?? "succeeded",
        resultsUrl: formatS3Url(layout.results), markerUrl: formatS3Url(layout.marker), logUrl: formatS3Url(layout.log),
        timings: { driver: context.driverTimings, agent: {} }, attempts: [context.spec.jobId],
      };
      return { kind: "finished", result };
    },
  };
}

async function main(): Promise<number> {
  const input = JSON.parse(process.env.SCALE_DRIVER ?? "") as ScaleDriverInput;
  const tResolve = Date.now();
  const bySubject = new Map<string, ResolvedJob>();
  for (const subject of input.subjects) bySubject.set(subject, await resolvePackageJob({ config: input.config, subject }, { keepEnv: true }));
  const resolveSeconds = (Date.now() - tResolve) / 1000;
  say({ phase: "resolved" });
  await new Promise<void>((resolve) => readline.createInterface({ input: process.stdin }).once("line", () => resolve()));

  const running = new Set<string>();
  let maxInFlight = 0;
  let allInFlightAt: number | undefined;
  let firstDoneAt: number | undefined;
  const tBatch = Date.now();
  const sink = {
    event(e: BatchEvent) {
      if (e.event === "job-running") {
        running.add(e.subject);
        maxInFlight = Math.max(maxInFlight, running.size);
        if (running.size === input.subjects.length && allInFlightAt === undefined) {
          allInFlightAt = Date.now();
          say({ phase: "all-in-flight" });
        }
      } else if (e.event === "job-done" && running.delete(e.subject) && firstDoneAt === undefined) {
        firstDoneAt = Date.now();
        say({ phase: "first-done" });
      } else if (e.event === "note" && /error|lost|could not/i.test(e.message)) process.stderr.write(`scale-driver: ${e.subject ?? ""} ${e.message}\n`);
    },
    close: () => undefined,
  };
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  const result = await runBatch({
    jobs: [...bySubject.values()],
    concurrency: input.concurrency,
    engineConcurrency: input.engineConcurrency,
    retries: 0,
    rerun: false,
    workerArgs: [],
    signal: controller.signal,
    edges: standInEdges(input, bySubject),
    sink,
  });
  const outcomes: Record<string, number> = {};
  for (const entry of result.entries) outcomes[entry.outcome] = (outcomes[entry.outcome] ?? 0) + 1;
  const since = (at?: number) => (at === undefined ? undefined : (at - tBatch) / 1000);
  const report: ScaleDriverResult = {
    phase: "result", jobs: input.subjects.length, succeeded: outcomes.succeeded ?? 0, outcomes, exitCode: result.exitCode, maxInFlight, resolveSeconds,
    allInFlightSeconds: since(allInFlightAt), firstDoneSeconds: since(firstDoneAt), batchSeconds: (Date.now() - tBatch) / 1000,
  };
  say(report);
  return 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`scale-driver failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
