/**
 * The driver's parts that need no engine: spec resolution from config file + flags, subjects files, batch exit
 * codes, progress output, the job index, engine error messages, and the wait loop against a real S3 (moto) with a
 * scripted platform and clock.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { ConcurrentUpdateError } from "@pulumi/pulumi/automation";
import { resolveJob } from "../driver/options";
import { batchExitCode, readSubjectsFile } from "../driver/batch";
import { BadInputError, ExitCode, InfraError, InterruptedError } from "../driver/errors";
import { createProgress } from "../driver/progress";
import { latestJob, listJobRecords, readJobRecord, writeJobRecord, JobRecord } from "../driver/jobindex";
import { explainEngineError } from "../driver/engine";
import { waitForCompletion } from "../driver/wait";
import { isRetryable, type JobResult } from "../driver/run";
import { jobSummary } from "../driver/summary";
import { currentOwner, ownerState, thisHost } from "../driver/owner";
import type { Platform } from "../driver/platform";
import { jobLayout } from "../job/layout";
import type { AgentStatus, CompletionMarker } from "../job/records";
import { parseJobSpec } from "../job/spec";
import { newBucket, sharedMoto, testS3 } from "./support/fixtures";
import { CLI, withoutSdkNoise } from "../sandbox/driver-sandbox";
import { startFaultProxy } from "./support/fault-proxy";
import { scenario } from "./support/reliability";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-driver-unit-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writeFile(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

const CONFIG = `config:
  aws:region: us-east-1
  cloudcompute:subject: NDAR_INV1A2B3C4D
  cloudcompute:jobId: job-fixed-by-hand
  cloudcompute:image: neuronets/kwyk:latest-cpu
  cloudcompute:command: ["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"]
  cloudcompute:inputs:
    - name: t1
      url: s3://NDAR_Central_2/submission_1/{subject}_baselineYear1Arm1_ABCD-MPROC-T1.tgz
      select: "**/*_T1w.nii"
  cloudcompute:outputPrefix: s3://lab-bucket/kwyk
  cloudcompute:instanceType: m5.4xlarge
  cloudcompute:platform: local
  cloudcompute:agentBundle: build/agent.js
  cloudcompute:labels:
    study: abcd
`;

describe("driver: spec from config file and flags", () => {
  const config = writeFile("Pulumi.unit.yaml", CONFIG);

  it("reads the file, fills {subject} into input URLs, and makes a fresh job id per run", () => {
    const at = new Date("2026-11-25T10:00:00.123Z");
    const job = resolveJob({ config }, at);
    expect(job.spec.subject).to.equal("NDARINV1A2B3C4D");
    expect(job.spec.jobId).to.equal("job-NDARINV1A2B3C4D-20261125T100000123Z"); // not the file's jobId
    expect(job.spec.inputs[0].url).to.equal("s3://NDAR_Central_2/submission_1/NDARINV1A2B3C4D_baselineYear1Arm1_ABCD-MPROC-T1.tgz");
    expect(job.spec.container.command).to.deep.equal(["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"]);
    expect(job.spec.labels).to.deep.equal({ study: "abcd" });
    expect(job.platform).to.equal("local");
    expect(job.agentBundlePath).to.equal(path.join(tmp, "build", "agent.js")); // relative to the file
  });

  it("lets flags override the file, key by key", () => {
    const job = resolveJob({
      config,
      subject: "sub-07",
      image: "busybox:1",
      command: "sh -c true",
      input: ["s3://other/{subject}.nii", '{"name":"mask","url":"s3://other/mask.nii","extract":"none"}'],
      env: ["A=1", "B=x=y"],
      spot: true,
      maxRuntime: 30,
      platform: "aws",
      jobId: "job-given",
    });
    expect(job.spec.subject).to.equal("sub-07");
    expect(job.spec.jobId).to.equal("job-given");
    expect(job.spec.container.image).to.equal("busybox:1");
    expect(job.spec.container.command).to.deep.equal(["sh", "-c", "true"]);
    expect(job.spec.inputs.map((i) => [i.name, i.url])).to.deep.equal([
      ["input1", "s3://other/sub-07.nii"],
      ["mask", "s3://other/mask.nii"],
    ]);
    expect(job.spec.container.env).to.deep.equal({ A: "1", B: "x=y" });
    expect(job.spec.instance.spot).to.equal(true);
    expect(job.spec.limits.maxRuntimeMinutes).to.equal(30);
    expect(job.platform).to.equal("aws");
  });

  it("reports every bad key by its config name, as bad input", () => {
    const err = (() => {
      try {
        resolveJob({ config, subject: "NDAR_INVbad", instanceType: "huge", output: "s3://lab-bucket/a*b" });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).to.be.instanceOf(BadInputError);
    expect((err as BadInputError).exitCode).to.equal(ExitCode.badInput);
    expect(err!.message).to.include("cloudcompute:subject").and.include("cloudcompute:instanceType").and.include("cloudcompute:outputPrefix");
  });

  it("refuses a named config file that is missing, encrypted values and malformed flags", () => {
    expect(() => resolveJob({ config: path.join(tmp, "missing.yaml") })).to.throw(BadInputError, /does not exist/);
    // Keys at the top level instead of under `config:` would read as an empty file: every key "required".
    const flat = writeFile("Pulumi.flat.yaml", "cloudcompute:subject: sub-01\naws:region: us-east-1\n");
    expect(() => resolveJob({ config: flat })).to.throw(BadInputError, /cloudcompute:subject, aws:region must sit under "config:"/);
    const secure = writeFile("Pulumi.secure.yaml", CONFIG + "  cloudcompute:image:\n    secure: AAABAxyz\n".replace("cloudcompute:image", "cloudcompute:entrypoint"));
    expect(() => resolveJob({ config: secure })).to.throw(BadInputError, /cloudcompute:entrypoint is an encrypted value/);
    expect(() => resolveJob({ config, env: ["=NONAME"] })).to.throw(BadInputError, /--env "=NONAME": expected NAME=VALUE/);
    expect(() => resolveJob({ config, env: ["CC_UNSET_VARIABLE"] })).to.throw(BadInputError, /--env CC_UNSET_VARIABLE: no such variable in the environment/);
    process.env.CC_TEST_TOKEN = "from-the-environment";
    try {
      expect(resolveJob({ config, env: ["CC_TEST_TOKEN"] }).spec.container.env).to.deep.equal({ CC_TEST_TOKEN: "from-the-environment" });
    } finally {
      delete process.env.CC_TEST_TOKEN;
    }
    // A typo in a key is refused with the key it was probably meant to be, not ignored (the default would apply).
    const typo = writeFile("Pulumi.typo.yaml", CONFIG + "  cloudcompute:maxRuntimeMinute: \"60\"\n");
    expect(() => resolveJob({ config: typo })).to.throw(BadInputError, /cloudcompute:maxRuntimeMinute: no such key \(did you mean cloudcompute:maxRuntimeMinutes\?\)/);
    const notYaml = writeFile("Pulumi.bad.yaml", "config: [unclosed\n");
    expect(() => resolveJob({ config: notYaml })).to.throw(BadInputError, /not valid YAML/);
  });
});

describe("driver: subjects files and batch exit codes", () => {
  it("reads one subject per line or the first CSV column, normalised and deduplicated, skipping headers and comments", () => {
    const file = writeFile("subjects.csv", "subjectkey,notes\n# a comment\nNDAR_INV1A2B3C4D,first\n\nNDARINV1A2B3C4D,dup\n\"sub-01\",x\n");
    expect(readSubjectsFile(file)).to.deep.equal(["NDARINV1A2B3C4D", "sub-01"]);
  });

  it("names the lines of bad subjects", () => {
    const file = writeFile("bad-subjects.txt", "sub-01\nNDAR_INVxx\n../etc\n");
    expect(() => readSubjectsFile(file)).to.throw(BadInputError, /line 2: .*NDA GUID[\s\S]*line 3/);
    expect(() => readSubjectsFile(writeFile("empty.txt", "# nothing\n"))).to.throw(BadInputError, /lists no subjects/);
  });

  it("gives 130 if interrupted, else 3 for infrastructure errors, else 1 for failures, else 0", () => {
    const e = (exitCode: number) => ({ subject: "s", outcome: "succeeded" as const, exitCode });
    expect(batchExitCode([e(0), e(0)], false)).to.equal(0);
    expect(batchExitCode([e(0), e(1)], false)).to.equal(1);
    expect(batchExitCode([e(1), e(3)], false)).to.equal(3);
    expect(batchExitCode([e(1), e(130)], false)).to.equal(130);
    expect(batchExitCode([e(0)], true)).to.equal(130);
  });
});

describe("driver: progress output", () => {
  function fakeStream(isTTY: boolean) {
    const chunks: string[] = [];
    return { chunks, stream: { isTTY, columns: 120, write: (s: string) => chunks.push(s) } as unknown as NodeJS.WriteStream };
  }
  const status = (phase: AgentStatus["phase"], done: number, total?: number): AgentStatus => ({
    jobId: "j",
    phase,
    updatedAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    phases: { [phase]: { bytesDone: done, bytesTotal: total } },
  });

  it("prints plain lines on phase changes and every 30 s otherwise", () => {
    let clock = 0;
    const { chunks, stream } = fakeStream(false);
    const progress = createProgress("[job]", stream, () => clock);
    progress.status(status("inputs", 1024, 4096));
    clock += 5_000;
    progress.status(status("inputs", 2048, 4096)); // same phase, too soon: no line
    clock += 30_000;
    progress.status(status("inputs", 3072, 4096)); // 30 s later: a line
    progress.status(status("run", 0));
    expect(chunks).to.have.length(3);
    expect(chunks[0]).to.equal("[job] 0s phase=inputs 1.0 KiB/4.0 KiB\n");
    expect(chunks[1]).to.include("3.0 KiB/4.0 KiB");
    expect(chunks[2]).to.match(/phase=run/);
    expect(chunks.join("")).to.not.include("\r");
  });

  it("redraws one line with a bar on a TTY", () => {
    const { chunks, stream } = fakeStream(true);
    const progress = createProgress("[job]", stream, () => 0);
    progress.status(status("outputs", 512, 1024));
    progress.note("destroying");
    expect(chunks[0]).to.match(/^\r\x1b\[K\[job\] outputs \[#{10}\.{10}\] 512 B\/1\.0 KiB/);
    expect(chunks[1]).to.equal("\n"); // the bar's line is closed before a note
    expect(chunks[2]).to.equal("[job] destroying\n");
  });
});

describe("driver: who owns a job (gc and cancel act only on provably dead owners)", () => {
  it("a driver on another machine with the same hostname (a container, a CI runner, a recycled VM) is never taken for a dead one here", () => {
    const deadPid = 2 ** 22 - 7; // above the usual pid_max: no such process
    expect(ownerState({ host: os.hostname(), pid: deadPid, pidStart: "x" }), "hostname alone").to.equal("unknown");
    expect(ownerState({ host: `${os.hostname()}/0123456789ab/4026531836`, pid: deadPid, pidStart: "x" }), "another machine id").to.equal(thisHost().includes("0123456789ab") ? "dead" : "unknown");
    expect(ownerState({ host: thisHost(), pid: deadPid, pidStart: "x" }), "this machine, process gone").to.equal("dead");
  });
  it("a live PID is ours only with the same boot and start time", () => {
    const me = currentOwner();
    expect(me.pidStart).to.match(/^[0-9a-f]{8}:\d+$/);
    expect(ownerState(me)).to.equal("alive");
    expect(ownerState({ ...me, pidStart: `deadbeef:${me.pidStart.split(":")[1]}` }), "same start ticks, another boot").to.equal("dead");
    expect(ownerState({ ...me, pidStart: "" }), "no start time recorded").to.equal("unknown");
  });
});

describe("driver: summaries a terminal can trust", () => {
  const base: JobResult = {
    jobId: "job-sub-01-20261129T000000000Z",
    subject: "sub-01",
    platform: "local",
    outcome: "failed",
    exitCode: ExitCode.jobFailed,
    reason: "container-failed",
    message: "the container exited with 1: \u001b[2A\u001b[2Kjob sub-01: SUCCEEDED\u001b]0;owned\u0007",
    resultsUrl: "s3://lab/results/sub-01/",
    markerUrl: "s3://lab/results/_cloudcompute/job/marker.json",
    logUrl: "s3://lab/results/_cloudcompute/job/agent.log",
    timings: { driver: {}, agent: {} },
    outputs: { count: 2, bytes: 10, partial: true },
    attempts: ["job-sub-01-20261129T000000000Z"],
  };

  it("shows no terminal control sequence from the job's output (it could repaint a failure as a success)", () => {
    const text = jobSummary(base);
    expect(text).to.not.match(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(text).to.include("FAILED [container-failed]");
  });

  it("names the provenance record", () => {
    expect(jobSummary({ ...base, provenanceUrl: "s3://lab/results/_cloudcompute/job/provenance.json" })).to.include("  provenance: s3://lab/results/_cloudcompute/job/provenance.json (image digest");
  });

  it("says what a retried spot job's attempts cost each, and what spot saved net of the lost one", () => {
    const text = jobSummary({
      ...base, outcome: "succeeded", reason: undefined, attempts: ["job-a", "job-b"], instanceSeconds: 600, billedSeconds: 603, costUsd: 0.1336,
      attemptCosts: [{ jobId: "job-a", spot: true, costUsd: 0.005, onDemandUsd: 0.0128, reason: "spot-interrupted" }, { jobId: "job-b", spot: false, costUsd: 0.1286 }],
      spot: { savedUsd: 0.0078, interruptionsUsd: 0.005, lostAttempts: 1, netSavedUsd: -0.005 },
    });
    expect(text).to.include("estimated cost $0.13 (all 2 attempts)");
    expect(text).to.include("spot saved $0.0078 against on-demand prices; 1 lost attempt cost $0.0050 (included in the cost); net $0.0050 above one on-demand run");
    expect(text).to.include("attempts: job-a (spot, $0.0050, spot-interrupted), job-b (on-demand, $0.13)");
  });

  it("a job that never started gets no empty results, log or driver lines", () => {
    const text = jobSummary({ ...base, resultsUrl: "", logUrl: "", markerUrl: "", outputs: undefined, timings: { driver: {}, agent: {} } });
    expect(text).to.include("  results:  none from this job\n");
    expect(text).to.not.match(/log:|driver:|\( is not/);
  });

  it("never presents the subject's results folder as a failed job's output", () => {
    expect(jobSummary(base)).to.include("results:  none from this job (s3://lab/results/sub-01/ is not its output; its 2 partial output(s) are in the job's area)");
    expect(jobSummary({ ...base, outcome: "succeeded", reason: undefined, outputs: { count: 3, bytes: 2048, partial: false } })).to.include("results:  s3://lab/results/sub-01/ (3 objects");
  });
});

describe("driver: job index", () => {
  const saved = process.env.CLOUDCOMPUTE_HOME;
  before(() => (process.env.CLOUDCOMPUTE_HOME = path.join(tmp, "home")));
  after(() => (saved === undefined ? delete process.env.CLOUDCOMPUTE_HOME : (process.env.CLOUDCOMPUTE_HOME = saved)));

  const rec = (jobId: string, subject: string, createdAt: string): JobRecord => ({
    jobId,
    subject,
    platform: "local",
    backend: "file:///x",
    state: "succeeded",
    createdAt,
    markerUrl: "s3://b/m",
    resultsUrl: "s3://b/r/",
    statusUrl: "s3://b/s",
    logUrl: "s3://b/l",
  });

  it("keeps one record per job, lists them oldest first and finds the latest of a subject", () => {
    writeJobRecord(rec("job-b-2", "b", "2026-11-25T10:00:02Z"));
    writeJobRecord(rec("job-a-1", "a", "2026-11-25T10:00:01Z"));
    writeJobRecord(rec("job-a-3", "a", "2026-11-25T10:00:03Z"));
    writeJobRecord({ ...rec("job-b-2", "b", "2026-11-25T10:00:02Z"), state: "failed" }); // rewrite, not append
    expect(listJobRecords().map((r) => r.jobId)).to.deep.equal(["job-a-1", "job-b-2", "job-a-3"]);
    expect(readJobRecord("job-b-2")?.state).to.equal("failed");
    expect(latestJob("b")?.jobId).to.equal("job-b-2");
    expect(latestJob()?.jobId).to.equal("job-a-3");
    expect(fs.readdirSync(path.join(tmp, "home", "jobs")).filter((f) => f.endsWith(".tmp"))).to.deep.equal([]);
    expect(() => writeJobRecord(rec("../evil", "a", "x"))).to.throw(/not a job id/);
  });
});

describe("driver: engine errors and a missing CLI", () => {
  it("turns a stack lock into the command that clears it", () => {
    const locked = new (ConcurrentUpdateError as unknown as new (r: unknown) => Error)({ toString: () => "the stack is currently locked by 1 lock(s)" });
    const err = explainEngineError(locked, "job-x-1");
    expect(err).to.be.instanceOf(InfraError);
    expect(err.message).to.include("locked").and.include("npm run job -- cancel job-x-1");
  });

  it("says the Pulumi CLI is missing and how to build it, with exit 3", function () {
    this.timeout(60_000);
    const emptyCache = fs.mkdtempSync(path.join(tmp, "cache-"));
    const res = spawnSync(process.execPath, [CLI, "list", "--stacks"], {
      encoding: "utf8",
      env: { ...process.env, PATH: path.dirname(process.execPath), CLOUDCOMPUTE_CACHE: emptyCache, CLOUDCOMPUTE_HOME: path.join(tmp, "home2") },
    });
    expect(res.status).to.equal(ExitCode.infra);
    expect(withoutSdkNoise(res.stderr)).to.include("Pulumi CLI >= 3.248.0 was not found").and.include("bash scripts/pulumi-cli.sh");
  });
});

describe("driver: waiting for the marker (moto S3, scripted platform and clock)", function () {
  this.timeout(50_000);
  let bucket: string;
  before(async () => {
    await sharedMoto();
    bucket = await newBucket(testS3(), "cc-driver-wait");
  });

  function job(limits = { maxRuntimeMinutes: 1, graceMinutes: 1, heartbeatTimeoutSeconds: 30 }) {
    return parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: `job-sub-01-2026112510000${Math.floor(Math.random() * 1e6)}`.slice(0, 60),
      subject: "sub-01",
      inputs: [{ name: "t1", url: `s3://${bucket}/in.nii` }],
      container: { image: "x", command: [] },
      outputs: { prefix: `s3://${bucket}/out` },
      limits,
      instance: { type: "m5.large", region: "us-east-1" },
      launchId: `launch-${Math.floor(Math.random() * 1e9)}`,
    });
  }
  const put = (key: string, body: unknown) => testS3().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(body) }));
  const platform = (computeState: Platform["computeState"]): Platform =>
    ({ name: "local", pollIntervalMs: 5, bootGraceSeconds: 60, refreshBeforeDestroy: false, requiredPlugins: [], computeState } as unknown as Platform);
  const quiet = { status() {}, note() {}, end() {} };
  const marker = (spec: ReturnType<typeof job>, outcome: "succeeded" | "failed"): CompletionMarker => ({
    apiVersion: "cloudcompute/v1",
    jobId: spec.jobId,
    launchId: spec.launchId,
    subject: spec.subject,
    outcome,
    message: outcome,
    finishedAt: new Date().toISOString(),
    outputs: { prefix: "s3://x/", count: 0, bytes: 0, partial: false },
    timings: {},
  });

  it("shows each new status and returns the marker", async () => {
    const spec = job();
    const layout = jobLayout(spec);
    const seen: string[] = [];
    let polls = 0;
    const result = await waitForCompletion({
      spec,
      platform: platform(async () => {
        polls++;
        if (polls === 1) await put(layout.status.key, { jobId: spec.jobId, launchId: spec.launchId, phase: "inputs", updatedAt: "t1", startedAt: "t0", phases: {} });
        if (polls === 3) await put(layout.marker.key, marker(spec, "succeeded"));
        return { alive: true };
      }),
      instanceId: "i-1",
      startedAt: Date.now(),
      signal: new AbortController().signal,
      progress: { ...quiet, status: (s) => seen.push(s.phase) },
    });
    expect(result.kind).to.equal("marker");
    expect(result.kind === "marker" && result.marker.outcome).to.equal("succeeded");
    expect(seen).to.deep.equal(["inputs"]);
  });

  it("calls the job lost when the compute ends without a marker, but not when the marker comes just after", async () => {
    const lost = await waitForCompletion({
      spec: job(),
      platform: platform(async () => ({ alive: false, reason: "spot-interrupted", detail: "terminated (Server.SpotInstanceTermination)" })),
      instanceId: "i-2",
      startedAt: Date.now(),
      signal: new AbortController().signal,
      progress: quiet,
    });
    expect(lost).to.deep.include({ kind: "lost", reason: "spot-interrupted" });

    const spec = job();
    const late = await waitForCompletion({
      spec,
      platform: platform(async () => {
        await put(jobLayout(spec).marker.key, marker(spec, "failed")); // written as the agent exits
        return { alive: false, reason: "instance-lost" };
      }),
      instanceId: "i-3",
      startedAt: Date.now(),
      signal: new AbortController().signal,
      progress: quiet,
    });
    expect(late.kind).to.equal("marker");
  });

  it("fails on a stale heartbeat, judged by when the driver saw the status change", async () => {
    const spec = job({ maxRuntimeMinutes: 600, graceMinutes: 10, heartbeatTimeoutSeconds: 30 });
    await put(jobLayout(spec).status.key, { jobId: spec.jobId, launchId: spec.launchId, phase: "run", updatedAt: "frozen", startedAt: "t0", phases: {} });
    let clock = 0;
    const result = await waitForCompletion({
      spec,
      platform: platform(async () => ({ alive: true })),
      instanceId: "i-4",
      startedAt: 0,
      signal: new AbortController().signal,
      progress: quiet,
      now: () => (clock += 5_000),
    });
    expect(result.kind).to.equal("heartbeat-lost");
    expect(result.kind === "heartbeat-lost" && result.detail).to.match(/no status update for \d+ s \(limit 30 s\); last phase run/);
  });

  it("gives up after max runtime + grace even with a live heartbeat", async () => {
    const spec = job({ maxRuntimeMinutes: 1, graceMinutes: 1, heartbeatTimeoutSeconds: 3600 });
    let clock = 0;
    const result = await waitForCompletion({
      spec,
      platform: platform(async () => ({ alive: true })),
      instanceId: "i-5",
      startedAt: 0,
      signal: new AbortController().signal,
      progress: quiet,
      now: () => (clock += 30_000),
    });
    expect(result.kind).to.equal("max-runtime");
  });

  it("ignores a marker and status left by an earlier launch under the same job id", async () => {
    const spec = job();
    const layout = jobLayout(spec);
    // An earlier launch of this job id succeeded; this launch will fail.
    await put(layout.marker.key, { ...marker(spec, "succeeded"), launchId: "launch-earlier" });
    await put(layout.status.key, { jobId: spec.jobId, launchId: "launch-earlier", phase: "done", updatedAt: "old", startedAt: "t0", phases: {} });
    const seen: string[] = [];
    let polls = 0;
    const result = await waitForCompletion({
      spec,
      platform: platform(async () => {
        if (++polls === 4) await put(layout.marker.key, marker(spec, "failed"));
        return { alive: true };
      }),
      instanceId: "i-7",
      startedAt: Date.now(),
      signal: new AbortController().signal,
      progress: { ...quiet, status: (s) => seen.push(s.phase) },
    });
    expect(result.kind === "marker" && result.marker.outcome).to.equal("failed");
    expect(seen).to.deep.equal([]);
  });

  it("does not act on a marker that is not a valid marker (a forged or foreign shape)", async () => {
    const spec = job();
    const layout = jobLayout(spec);
    await put(layout.marker.key, { launchId: spec.launchId, outcome: "succeeded" });
    let polls = 0;
    const result = await waitForCompletion({
      spec,
      platform: platform(async () => {
        if (++polls === 3) await put(layout.marker.key, marker(spec, "failed"));
        return { alive: true };
      }),
      instanceId: "i-8",
      startedAt: Date.now(),
      signal: new AbortController().signal,
      progress: quiet,
    });
    expect(result.kind === "marker" && result.marker.outcome).to.equal("failed");
  });

  for (const mode of ["http-503", "http-500", "reset"] as const) {
    it(`rides out an S3 outage (${mode} for every read) and an EC2 poll error, then takes the real marker`, () =>
      scenario("fault", "network", `S3 ${mode} on every read for minutes of the wait + EC2 throttling`, "the wait goes on and ends with the agent's real marker", async () => {
      const spec = job({ maxRuntimeMinutes: 600, graceMinutes: 10, heartbeatTimeoutSeconds: 120 });
      const layout = jobLayout(spec);
      await put(layout.status.key, { jobId: spec.jobId, launchId: spec.launchId, phase: "run", updatedAt: "t1", startedAt: "t0", phases: {} });
      const proxy = await startFaultProxy(process.env.AWS_ENDPOINT_URL!);
      const saved = process.env.AWS_ENDPOINT_URL;
      process.env.AWS_ENDPOINT_URL = proxy.endpoint;
      const notes: string[] = [];
      let clock = 0;
      let polls = 0;
      try {
        proxy.set(mode);
        const result = await waitForCompletion({
          spec,
          platform: platform(async () => {
            polls++;
            // 50 s per poll by the driver's clock: five polls of outage outlast the boot allowance + heartbeat timeout.
            clock += 50_000;
            if (polls === 2) throw Object.assign(new Error("Rate exceeded"), { name: "RequestLimitExceeded" });
            if (polls >= 6) {
              proxy.set("pass");
              await put(layout.status.key, { jobId: spec.jobId, launchId: spec.launchId, phase: "outputs", updatedAt: `t${polls}`, startedAt: "t0", phases: {} });
            }
            if (polls === 8) await put(layout.marker.key, marker(spec, "succeeded"));
            return { alive: true };
          }),
          instanceId: "i-9",
          startedAt: 0,
          signal: new AbortController().signal,
          progress: { ...quiet, note: (line) => notes.push(line) },
          now: () => clock,
        });
        expect(result.kind === "marker" && result.marker.outcome, JSON.stringify(result)).to.equal("succeeded");
        expect(proxy.faults).to.be.greaterThan(0);
        expect(notes.some((n) => /could not read the completion marker, retrying/.test(n))).to.equal(true);
        expect(notes.some((n) => /could not read the compute's state, retrying: Rate exceeded/.test(n))).to.equal(true);
        return `marker ${result.kind === "marker" ? result.marker.outcome : result.kind} after ${proxy.faults} faulted requests`;
      } finally {
        process.env.AWS_ENDPOINT_URL = saved;
        await proxy.close();
      }
    }));
  }

  it("stops at once when interrupted", async () => {
    const controller = new AbortController();
    const waiting = waitForCompletion({
      spec: job(),
      platform: { ...platform(async () => ({ alive: true })), pollIntervalMs: 60_000 } as Platform,
      instanceId: "i-6",
      startedAt: Date.now(),
      signal: controller.signal,
      progress: quiet,
    });
    setTimeout(() => controller.abort(), 50);
    // The poll interval (60 s) is the test's whole timeout: only an immediate stop passes.
    const err = await waiting.then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(InterruptedError);
  });
});

describe("driver: what --retries retries", () => {
  it("retries spot interruptions and instances EC2 says it lost, nothing else", () => {
    expect(isRetryable({ reason: "spot-interrupted", message: "failed in phase run (spot-interrupted): EC2 interrupts this spot instance" })).to.equal(true);
    expect(isRetryable({ reason: "instance-lost", message: "the compute ended without a completion marker: terminated (Server.InternalError: Internal error on launch)" })).to.equal(true);
    expect(isRetryable({ reason: "instance-lost", message: "the compute ended without a completion marker: the agent process has exited" })).to.equal(false);
    expect(isRetryable({ reason: "instance-lost", message: "the compute ended without a completion marker: terminated (Client.UserInitiatedShutdown: User initiated shutdown)" })).to.equal(false);
    for (const reason of ["container-failed", "missing-input", "heartbeat-lost", "max-runtime", "internal-error", "up-failed", undefined]) {
      expect(isRetryable({ reason, message: "x" }), String(reason)).to.equal(false);
    }
  });
});
