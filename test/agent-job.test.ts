/**
 * Whole jobs through runAgentJob: moto S3 via the real SDK, podman + runc pulling a busybox image from a local registry,
 * a synthetic ABCD archive with a real NIfTI-1 image, and a container script that reads the header and writes
 * several outputs. Every failure reason gets its own job; none may ever write a success marker.
 */
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { jobLayout } from "../job/layout";
import type { AgentStatus, CompletionMarker, FailureReason, ProvenanceRecord } from "../job/records";
import { parseJobSpec, type JobSpec, type JobSpecInput } from "../job/spec";
import { runAgentJob, type AgentOptions, type AgentRunResult } from "../agent/run";
import { MAX_PARTS, partSizeFor } from "../agent/upload";
import { findSuccess } from "../driver/batch";
import { scenario } from "./support/reliability";
import { getBytes, getJson, listKeys, makeAbcdArchive, newBucket, put, sharedMoto, testS3, type AbcdArchive } from "./support/fixtures";
import { containerExists, podmanAvailable, podmanTestEnv, type PodmanEnv } from "../sandbox/podman";
import { startExpiryProxy, type ExpiryProxy } from "./support/s3-expiry-proxy";

const GUID = "NDARINVJOB12345";
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * Reads the NIfTI-1 header like a real tool would, then writes outputs; CC_TEST_MODE picks a failure to act out.
 * No braces: the spec treats every {...} in a command as a placeholder.
 */
const SCRIPT = `
set -e
in="$1"; out="$2"; subj="$3"
echo "job script: mode=$CC_TEST_MODE input=$in"
test "$(od -An -tu4 -N4 "$in" | tr -d ' ')" = 348 || (echo "not a NIfTI-1 header" >&2; exit 3)
test "$(dd if="$in" bs=1 skip=344 count=3 2>/dev/null)" = "n+1" || (echo "bad NIfTI magic" >&2; exit 4)
mkdir -p "$out/stats"
echo "nx=$(od -An -td2 -j42 -N2 "$in" | tr -d ' ') ny=$(od -An -td2 -j44 -N2 "$in" | tr -d ' ') nz=$(od -An -td2 -j46 -N2 "$in" | tr -d ' ')" > "$out/$subj"_dims.txt
head -c 352 "$in" > "$out/$subj"_header.bin
sha256sum "$in" > "$out/stats/input.sha256"
echo "$CC_TEST_MODE" > "$out/stats/mode.txt"
case "$CC_TEST_MODE" in
  fail) echo "segmentation failed: model diverged" >&2; exit 7 ;;
  sleep) sleep 120 ;;
esac
dd if=/dev/zero of="$out/$subj"_means.nii bs=1048576 count=6 2>/dev/null
echo "done for $subj"
`;

interface Write {
  command: string;
  key: string;
  body?: string;
}

/** The real SDK client, observed: every successful write in order (the marker must be last). */
function recordingClient(writes: Write[], deny?: (command: string, key: string) => boolean): S3Client {
  const client = testS3();
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Key?: string; Body?: unknown };
      const command = context.commandName ?? "";
      if (deny?.(command, input.Key ?? "")) {
        throw Object.assign(new Error("Access Denied"), { name: "AccessDenied", $metadata: { httpStatusCode: 403 } });
      }
      const result = await next(args);
      if (/^(PutObject|CompleteMultipartUpload|CopyObject|DeleteObject)Command$/.test(command)) {
        writes.push({ command, key: input.Key ?? "", body: typeof input.Body === "string" ? input.Body : undefined });
      }
      return result;
    },
    { step: "initialize", name: "recordWrites" },
  );
  return client;
}

describe("agent jobs (moto S3 + podman)", function () {
  this.timeout(120_000);
  let s3: S3Client;
  let bucket: string;
  let podman: PodmanEnv;
  let archive: AbcdArchive;
  let proxy: ExpiryProxy;
  let counter = 0;
  const workdirs: string[] = [];

  before(async function () {
    if (!podmanAvailable()) {
      console.warn("    podman is not installed: skipping container job tests (CI installs podman)");
      this.skip();
    }
    const moto = await sharedMoto();
    podman = await podmanTestEnv();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-jobs");
    proxy = await startExpiryProxy(moto.endpoint);
    archive = await makeAbcdArchive(GUID, {
      dims: [32, 32, 24],
      extra: { [`sub-${GUID}/ses-baselineYear1Arm1/anat/sub-${GUID}_ses-baselineYear1Arm1_run-02_T1w.nii`]: Buffer.alloc(400) },
    });
    await put(s3, bucket, `submission_1/${archive.name}`, archive.tgz);
  });
  after(async () => {
    await proxy?.close();
    for (const dir of workdirs) rmSync(dir, { recursive: true, force: true });
  });

  function makeSpec(mode: string, overrides: Partial<JobSpecInput> = {}): JobSpec {
    const n = ++counter;
    return parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: `job-${GUID}-t${process.pid}-${n}`,
      subject: GUID,
      inputs: [{ name: "t1", url: `s3://${bucket}/submission_1/${archive.name}`, select: "**/*_run-01_T1w.nii" }],
      container: {
        image: podman.registryImage,
        runtime: "podman",
        command: ["sh", "-c", SCRIPT, "job", "{input}", "{output}", "{subject}"],
        env: { CC_TEST_MODE: mode },
      },
      // Each job its own prefix: results of one subject are shared by its jobs, and this file runs many.
      outputs: { prefix: `s3://${bucket}/derivatives/kwyk-${n}` },
      instance: { type: "m5.large", region: "us-east-1" },
      ...overrides,
    });
  }

  async function runTestJob(spec: JobSpec, opts: Partial<AgentOptions> & { deny?: (command: string, key: string) => boolean } = {}) {
    const writes: Write[] = [];
    const workdir = opts.workdir ?? mkdtempSync(path.join(tmpdir(), "cc-job-"));
    workdirs.push(workdir);
    const result: AgentRunResult = await runAgentJob(spec, {
      workdir,
      client: recordingClient(writes, opts.deny),
      statusIntervalMs: 200,
      logIntervalMs: 500,
      upload: { partSize: 5 * 1024 * 1024 },
      ...opts,
    });
    return { result, writes, layout: jobLayout(spec), workdir };
  }

  /** A failed job: the reason, one marker write (the last write), failed, and nothing in the results prefix. */
  async function expectFailure(run: Awaited<ReturnType<typeof runTestJob>>, reason: FailureReason) {
    const { result, writes, layout } = run;
    expect(result.marker.outcome, result.marker.message).to.equal("failed");
    expect(result.marker.reason, result.marker.message).to.equal(reason);
    const markerWrites = writes.filter((w) => w.key === layout.marker.key);
    expect(markerWrites).to.have.length(1);
    expect(writes.at(-1)!.key).to.equal(layout.marker.key);
    const stored = await getJson<CompletionMarker>(s3, layout.marker.bucket, layout.marker.key);
    expect(stored.outcome).to.equal("failed");
    expect(stored.reason).to.equal(reason);
    expect(await listKeys(s3, bucket, layout.results.key)).to.deep.equal([]);
    const provenance = await getJson<ProvenanceRecord>(s3, layout.provenance.bucket, layout.provenance.key);
    expect(provenance.outcome).to.equal("failed");
    expect(provenance.reason).to.equal(reason);
    return stored;
  }

  it("verifies multipart outputs without reading them back: a role that may not HeadObject/GetObject its results succeeds (moto returns no checksum on Complete)", async () => {
    const spec = makeSpec("ok");
    const results = jobLayout(spec).results.key;
    const { result } = await runTestJob(spec, { deny: (command, key) => /^(HeadObject|GetObject)Command$/.test(command) && key.startsWith(results) });
    expect(result.marker.outcome, result.marker.message).to.equal("succeeded");
    const big = result.provenance.outputs.find((o) => o.key.endsWith("_means.nii"))!;
    expect(big.size, "large enough for a multipart upload").to.be.greaterThan(5 * 1024 * 1024);
  });

  it("picks part sizes so any file fits in S3's 10,000 parts", () => {
    const MiB = 1024 * 1024;
    expect(partSizeFor(1024 * 1024 * MiB, 16 * MiB)).to.equal(105 * MiB); // 1 TiB
    expect(Math.ceil((1024 * 1024 * MiB) / partSizeFor(1024 * 1024 * MiB, 16 * MiB))).to.be.at.most(MAX_PARTS);
    expect(partSizeFor(200 * 1024 * MiB, 16 * MiB)).to.equal(21 * MiB); // 200 GiB: 16 MiB parts would need 12,800
    expect(partSizeFor(100 * MiB, 16 * MiB)).to.equal(16 * MiB);
  });

  it("container env reaches the container but not the podman CLI (PATH, LD_PRELOAD, CONTAINERS_CONF in the spec)", async () => {
    const env = { CC_TEST_MODE: "ok", PATH: "/nonexistent-bin", LD_PRELOAD: "/nonexistent/evil.so", CONTAINERS_CONF: "/nonexistent.conf", SECRET_VALUE: "s3cret value=with spaces" };
    const spec = makeSpec("ok", { container: { image: podman.registryImage, runtime: "podman", command: ["/bin/sh", "-c", 'echo "$SECRET_VALUE|$PATH" > "$1/env.txt"', "job", "{output}"], env } });
    const { result, layout } = await runTestJob(spec);
    expect(result.marker.outcome, result.marker.message).to.equal("succeeded");
    const seen = (await getBytes(s3, bucket, `${layout.results.key}env.txt`)).toString().trim();
    expect(seen).to.equal("s3cret value=with spaces|/nonexistent-bin");
  });

  it("succeeds: outputs verified in S3, provenance, status and log written, marker last", async () => {
    const spec = makeSpec("ok");
    const { result, writes, layout, workdir } = await runTestJob(spec);
    const { marker } = result;
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect(marker.reason).to.equal(undefined);
    expect(marker.exitCode).to.equal(0);

    const prefix = layout.results.key;
    const expected = [`${GUID}_dims.txt`, `${GUID}_header.bin`, `${GUID}_means.nii`, "stats/input.sha256", "stats/mode.txt"];
    expect(await listKeys(s3, bucket, prefix)).to.deep.equal(expected.map((f) => prefix + f));
    // The container really read the NIfTI it was given (header, dims, checksum) and got its env.
    expect((await getBytes(s3, bucket, `${prefix}${GUID}_dims.txt`)).toString()).to.equal("nx=32 ny=32 nz=24\n");
    expect((await getBytes(s3, bucket, `${prefix}${GUID}_header.bin`)).equals(archive.nifti.subarray(0, 352))).to.equal(true);
    expect((await getBytes(s3, bucket, `${prefix}stats/input.sha256`)).toString()).to.include(sha256(archive.nifti));
    expect((await getBytes(s3, bucket, `${prefix}stats/mode.txt`)).toString()).to.equal("ok\n");
    expect(marker.outputs).to.deep.include({ count: 5, partial: false, prefix: `s3://${bucket}/${prefix}` });
    expect(marker.outputs.bytes).to.be.greaterThan(6 * 1024 * 1024);

    // Marker written once, last, after every output object and after provenance, status and log.
    const markerIndex = writes.findIndex((w) => w.key === layout.marker.key);
    expect(markerIndex).to.equal(writes.length - 1);
    // Uploaded to the job's own area (the big file in parts), then copied server-side into the results.
    const outputWrites = writes.map((w, i) => ({ ...w, i })).filter((w) => w.key.startsWith(prefix));
    expect(outputWrites.map((w) => w.key).sort()).to.deep.equal(expected.map((f) => prefix + f));
    expect(outputWrites.every((w) => w.command === "CopyObjectCommand")).to.equal(true);
    expect(writes.some((w) => w.key.startsWith(layout.outputs.key) && w.command === "CompleteMultipartUploadCommand")).to.equal(true);
    for (const key of [layout.provenance.key, layout.status.key, layout.log.key]) {
      const last = writes.map((w) => w.key).lastIndexOf(key);
      expect(last, key).to.be.greaterThan(Math.max(...outputWrites.map((w) => w.i)));
      expect(last, key).to.be.lessThan(markerIndex);
    }

    const provenance = await getJson<ProvenanceRecord>(s3, bucket, layout.provenance.key);
    expect(provenance.outcome).to.equal("succeeded");
    expect(provenance.image!.reference).to.equal(podman.registryImage);
    expect(provenance.image!.digest).to.match(/^sha256:[0-9a-f]{64}$/);
    expect(provenance.inputs[0]).to.deep.include({ name: "t1", bytes: archive.tgz.length, sha256: sha256(archive.tgz) });
    expect(provenance.inputs[0].files).to.include(archive.t1w);
    expect(provenance.outputs.map((o) => o.key)).to.deep.equal(expected.map((f) => prefix + f));
    const means = provenance.outputs.find((o) => o.key.endsWith("_means.nii"))!;
    expect(means).to.deep.include({ size: 6 * 1024 * 1024, sha256: sha256(Buffer.alloc(6 * 1024 * 1024)) });
    expect(provenance.exitCode).to.equal(0);
    expect(provenance.partialOutputs).to.equal(false);
    expect(provenance.agentVersion).to.be.a("string");
    expect(Object.keys(provenance.timings)).to.include.members(["inputs", "pull", "run", "outputs"]);
    // Phases overlap (pull with inputs), so each is measured on its own clock: none may come out negative.
    for (const [phase, secs] of Object.entries(marker.timings)) expect(secs, phase).to.be.at.least(0);
    expect(marker.timings.finishing, "finishing is measured").to.be.a("number");

    const status = await getJson<AgentStatus>(s3, bucket, layout.status.key);
    expect(status.phase).to.equal("done");
    expect(status.phases.inputs!.bytesDone).to.equal(archive.tgz.length);
    expect(status.phases.outputs!.bytesDone).to.equal(marker.outputs.bytes);
    expect(writes.filter((w) => w.key === layout.status.key).length).to.be.greaterThan(2);

    const log = (await getBytes(s3, bucket, layout.log.key)).toString();
    expect(log).to.include(`done for ${GUID}`); // the container's stdout
    expect(log).to.include("phase run");
    // Inputs were bind-mounted read-only.
    expect(log).to.match(/job script: mode=ok input=\/data\/inputs\/t1\/sub-/);
    expect(workdir).to.be.a("string");
  });

  it("runs a host process (runtime none) with placeholders mapped to host paths", async () => {
    const spec = makeSpec("ok", {});
    spec.container.runtime = "none";
    const { result, layout, workdir } = await runTestJob(spec);
    expect(result.marker.outcome, result.marker.message).to.equal("succeeded");
    const log = (await getBytes(s3, bucket, layout.log.key)).toString();
    expect(log).to.include(`input=${path.join(workdir, "inputs", "t1", archive.t1w)}`);
    expect(result.provenance.image).to.equal(undefined);
  });

  it("missing-input: the archive does not exist", async () => {
    const spec = makeSpec("ok", {});
    spec.inputs[0].url = `s3://${bucket}/submission_1/absent.tgz`;
    const marker = await expectFailure(await runTestJob(spec), "missing-input");
    expect(marker.phase).to.equal("inputs");
  });

  it("presigned-url-expired: says so in those words", async () => {
    const spec = makeSpec("ok");
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: `submission_1/${archive.name}` }), {
      expiresIn: 60,
      signingDate: new Date(Date.now() - 2 * 3600_000),
    });
    // Validated as https; the local proxy speaks http.
    spec.inputs[0] = { ...spec.inputs[0], access: "presigned", url: proxy.via(url) };
    const run = await runTestJob(spec);
    const marker = await expectFailure(run, "presigned-url-expired");
    expect(marker.message).to.include("presigned URL expired");
    // The signature is a secret: not in the marker, the log or the provenance record.
    const log = (await getBytes(s3, bucket, run.layout.log.key)).toString();
    for (const text of [marker.message, log, JSON.stringify(run.result.provenance)]) expect(text).to.not.include("X-Amz-Signature");
  });

  it("corrupt-archive: a .tgz that is not one", async () => {
    await put(s3, bucket, "submission_1/broken.tgz", archive.tgz.subarray(0, 200));
    const spec = makeSpec("ok");
    spec.inputs[0].url = `s3://${bucket}/submission_1/broken.tgz`;
    await expectFailure(await runTestJob(spec), "corrupt-archive");
  });

  it("no-matching-file: the glob matches nothing", async () => {
    const spec = makeSpec("ok");
    spec.inputs[0].select = "**/*_T2w.nii";
    const marker = await expectFailure(await runTestJob(spec), "no-matching-file");
    expect(marker.message).to.include("*_T2w.nii");
  });

  it("multiple-matching-files: two T1w runs without allowMultiple", async () => {
    const spec = makeSpec("ok");
    spec.inputs[0].select = "**/*_T1w.nii";
    await expectFailure(await runTestJob(spec), "multiple-matching-files");
  });

  it("image-pull-failed: a tag the registry does not have", async () => {
    const spec = makeSpec("ok");
    spec.container.image = `${podman.registry}/cloudcompute-test/busybox:absent`;
    const marker = await expectFailure(await runTestJob(spec), "image-pull-failed");
    expect(marker.phase).to.equal("pull");
  });

  it("container-failed: non-zero exit; outputs so far kept apart and marked partial", async () => {
    const spec = makeSpec("fail");
    const run = await runTestJob(spec);
    const marker = await expectFailure(run, "container-failed");
    expect(marker.exitCode).to.equal(7);
    expect(marker.message).to.include("model diverged");
    expect(marker.outputs.partial).to.equal(true);
    const partial = jobLayout(spec).outputs;
    expect(marker.outputs.prefix).to.equal(`s3://${partial.bucket}/${partial.key}`);
    expect(await listKeys(s3, bucket, partial.key)).to.include(`${partial.key}stats/mode.txt`);
    expect(run.result.provenance.partialOutputs).to.equal(true);
  });

  it("max-runtime: the agent kills the container at the limit", async () => {
    const spec = makeSpec("sleep");
    const started = Date.now();
    const run = await runTestJob(spec, { maxRuntimeMs: 6000 });
    const marker = await expectFailure(run, "max-runtime");
    expect(marker.phase).to.equal("run");
    expect(Date.now() - started).to.be.lessThan(60_000); // the script sleeps 120 s
    const name = `cloudcompute-${spec.jobId}-${process.pid}`;
    expect(await containerExists(name), "container left behind").to.equal(false);
  });

  for (const [where, denied] of [
    ["an upload to the job's area", /PutObject|CreateMultipartUpload|UploadPart/],
    ["the promotion into the results", /CopyObject/],
  ] as const) {
    it(`output-upload-failed: ${where} fails for one file; ${where === "the promotion into the results" ? "the pointer marks the results incomplete until a re-run completes them" : "the subject's earlier results stay as they were"}`, () =>
      scenario("fault", "outputs", `${where} fails for one file after an earlier success`, where === "the promotion into the results" ? "output-upload-failed; the results pointer marks them incomplete (never a success); the next success replaces them" : "output-upload-failed; earlier results exactly as they were", async () => {
      // An earlier successful run of the subject under the same prefix.
      const first = makeSpec("ok");
      expect((await runTestJob(first)).result.marker.outcome).to.equal("succeeded");
      const layout = jobLayout(first);
      const before = await listKeys(s3, bucket, layout.results.key);
      const beforeDims = (await getBytes(s3, bucket, `${layout.results.key}${GUID}_dims.txt`)).toString();

      const spec = { ...makeSpec("ok"), outputs: first.outputs, jobId: `${first.jobId}-again` };
      const run = await runTestJob(spec, {
        deny: (command, key) => denied.test(command) && key.endsWith("mode.txt"),
        upload: { partSize: 5 * 1024 * 1024, attempts: 2, retryBaseDelayMs: 10 },
      });
      const marker = run.result.marker;
      expect(marker.reason, marker.message).to.equal("output-upload-failed");
      expect(marker).to.include({ outcome: "failed", phase: "outputs" });
      expect(marker.outputs.prefix).to.equal(`s3://${bucket}/${jobLayout(spec).outputs.key}`);
      expect(run.writes.filter((w) => w.key === run.layout.marker.key)).to.have.length(1);
      expect(run.writes.at(-1)!.key).to.equal(run.layout.marker.key);
      expect(await listKeys(s3, bucket, layout.results.key)).to.deep.equal(before);
      expect((await getBytes(s3, bucket, `${layout.results.key}${GUID}_dims.txt`)).toString()).to.equal(beforeDims);
      if (where === "the promotion into the results") {
        expect(marker.message).to.match(/promoting the outputs .* failed after .*marks .* incomplete/);
        // The pointer owns up: this job's promotion was cut off, so nobody (the batch included) takes the results
        // for a success until a re-run completes.
        const pointer = await getJson<{ jobId: string; complete?: boolean }>(s3, bucket, layout.resultsPointer.key);
        expect(pointer).to.include({ jobId: spec.jobId, complete: false });
        expect(await findSuccess(first.outputs.prefix, first.subject)).to.equal(undefined);
        const rerun = { ...makeSpec("ok"), outputs: first.outputs, jobId: `${first.jobId}-third` };
        expect((await runTestJob(rerun)).result.marker.outcome).to.equal("succeeded");
        expect(await getJson<{ jobId: string; complete?: boolean }>(s3, bucket, layout.resultsPointer.key)).to.include({ jobId: rerun.jobId, complete: true });
        expect(await findSuccess(first.outputs.prefix, first.subject)).to.equal(rerun.jobId);
        return `${marker.reason}; the pointer marks the results incomplete; the next success completes them`;
      }
      expect(await findSuccess(first.outputs.prefix, first.subject), "the earlier success still stands").to.equal(first.jobId);
      return `${marker.reason}; results unchanged (${before.length} objects)`;
    }));
  }

  it("a successful re-run replaces the subject's results exactly: files the new run did not write are removed", async () => {
    const first = makeSpec("ok");
    expect((await runTestJob(first)).result.marker.outcome).to.equal("succeeded");
    const layout = jobLayout(first);
    // The re-run writes one file only.
    const spec = {
      ...makeSpec("ok"),
      outputs: first.outputs,
      jobId: `${first.jobId}-rerun`,
      container: { ...first.container, command: ["sh", "-c", 'echo v2 > "$1/only.txt"', "job", "{output}"] },
    };
    const { result } = await runTestJob(spec);
    expect(result.marker.outcome, result.marker.message).to.equal("succeeded");
    expect(await listKeys(s3, bucket, layout.results.key)).to.deep.equal([`${layout.results.key}only.txt`]);
    const pointer = await getJson<{ jobId: string; objects: Array<{ key: string }> }>(s3, bucket, layout.resultsPointer.key);
    expect(pointer.jobId).to.equal(spec.jobId);
    expect(pointer.objects.map((o) => o.key)).to.deep.equal([`${layout.results.key}only.txt`]);
  });

  it("out-of-disk: ENOSPC while extracting", async function () {
    const mountpoint = mkdtempSync(path.join(tmpdir(), "cc-full-"));
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountpoint]);
    if (mounted.status !== 0) {
      console.warn("    cannot mount a small tmpfs here (needs root): skipping the out-of-disk job");
      this.skip();
    }
    try {
      const big = await makeAbcdArchive("NDARINVFULL0001", { dims: [128, 128, 128] }); // 2 MiB of voxels
      await put(s3, bucket, `submission_1/${big.name}`, big.tgz);
      const spec = makeSpec("ok");
      spec.inputs[0].url = `s3://${bucket}/submission_1/${big.name}`;
      const workdir = path.join(mountpoint, "work");
      mkdirSync(workdir);
      const marker = await expectFailure(await runTestJob(spec, { workdir }), "out-of-disk");
      expect(marker.phase).to.equal("inputs");
    } finally {
      spawnSync("umount", [mountpoint]);
      rmSync(mountpoint, { recursive: true, force: true });
    }
  });
});
