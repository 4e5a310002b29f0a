/**
 * Agent benchmarks (issue 3), each a ratio measured in one run against the same local S3 server:
 * - download+extract of a > 1 GiB subject archive: `fetchInput` (ranged parallel GETs, gunzip and untar in one pass)
 *   against the seed's `aws s3 cp` then `tar xzf`, and against its own pipeline limit max(download alone, extract
 *   alone) where "extract alone" is the same code reading the archive from local disk;
 * - upload of 1 GiB + 1,000 small files: `uploadOutputs` against `aws s3 cp --recursive`;
 * - overlap: a whole job (`runJob`: pull from a local registry beside the input download, podman run, upload, marker)
 *   against max(pull, download) + run + upload of the same steps measured one by one, and their sequential sum.
 * Measurements of one round run back to back, rotated between rounds so a drifting machine load hits all alike
 * (agent-rounds.ts); the S3 staging and checks are in agent-fixtures.ts.
 */
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pullImage, runContainer } from "../agent/container";
import { fetchInput } from "../agent/inputs";
import { uploadOutputs } from "../agent/outputs";
import { runAgentJob as runJob } from "../agent/run";
import { expandCommand } from "../job/command";
import { CONTAINER_PATHS, makeJobId } from "../job/layout";
import { InputSpec, parseJobSpec } from "../job/spec";
import { checkAndRemove, localFileClient, uploadFixture } from "./agent-fixtures";
import { aws, AWS_CLI, fresh, measured, runRounds, STEP_TIMEOUT_MS, type Steps } from "./agent-rounds";
import type { BenchContext, CaseResult } from "./context";
import { BENCH_SUBJECT, fileSha256, outputTree, subjectArchive, type SubjectArchive } from "./data";
import { MiB, r2, run, runMeasured, settleDisk, timed } from "./util";

// ---------------------------------------------------------------------------------------------------------------

async function downloadExtractCase(ctx: BenchContext, archive: SubjectArchive, key: string): Promise<CaseResult> {
  const url = `s3://${ctx.bucket}/${key}`;
  const input = InputSpec.parse({ name: "t1", url, select: "**/*_run-01_T1w.nii" });
  const downloadOnly = InputSpec.parse({ name: "archive", url, extract: "none" });
  const dir = (name: string) => join(ctx.scratchDir, "download", name);
  const t1Sha: Record<string, string> = {};

  // Each step removes what it wrote, so the next one starts with the same free page cache.
  const steps: Steps = {
    async peer() {
      const into = fresh(dir("peer"));
      const extracted = fresh(join(into, "x"));
      const cp = await aws(ctx, ["s3", "cp", "--only-show-errors", url, join(into, "archive.tgz")]);
      const untar = await runMeasured("tar", ["xzf", join(into, "archive.tgz"), "-C", extracted], {
        timeoutMs: STEP_TIMEOUT_MS,
        scratch: ctx.scratchDir,
      });
      t1Sha.peer ??= await fileSha256(join(extracted, archive.t1Member));
      rmSync(into, { recursive: true, force: true });
      return { peer_s: cp.seconds + untar.seconds, peer_cp_s: cp.seconds, peer_tar_s: untar.seconds, peer_cpu_s: (cp.cpuSeconds ?? NaN) + (untar.cpuSeconds ?? NaN) };
    },
    async ours() {
      const into = fresh(dir("ours"));
      const m = await measured(ctx, () => fetchInput(input, into));
      if (m.value.sha256 !== archive.sha256 || m.value.files.length !== archive.files || m.value.selected[0] !== archive.t1Member) {
        throw new Error(`the agent's download+extract returned something else: ${JSON.stringify({ ...m.value, files: m.value.files.length })}`);
      }
      t1Sha.ours ??= await fileSha256(join(into, archive.t1Member));
      rmSync(into, { recursive: true, force: true });
      return { ours_s: m.seconds, ours_cpu_s: m.cpu, server_cpu_s: m.serverCpu ?? NaN };
    },
    async download() {
      const into = fresh(dir("download"));
      const m = await measured(ctx, () => fetchInput(downloadOnly, into));
      if (m.value.sha256 !== archive.sha256) throw new Error("the agent's plain download has the wrong SHA-256");
      rmSync(into, { recursive: true, force: true });
      return { download_s: m.seconds };
    },
    async extract() {
      const into = fresh(dir("extract"));
      const client = localFileClient(archive.path, archive.bytes);
      try {
        const m = await measured(ctx, () => fetchInput(input, into, { client }));
        if (m.value.files.length !== archive.files) throw new Error("the agent's local extraction wrote the wrong files");
        rmSync(into, { recursive: true, force: true });
        return { extract_s: m.seconds };
      } finally {
        await client.closeFile();
      }
    },
  };

  const m = await runRounds(ctx, "download+extract", steps);
  if (t1Sha.peer !== t1Sha.ours) throw new Error(`the T1 extracted by the agent differs from tar's (${t1Sha.ours} vs ${t1Sha.peer})`);

  const limit = Math.max(m.download_s, m.extract_s);
  const ratio = r2(m.peer_s / m.ours_s);
  const limitRatio = r2(limit / m.ours_s);
  return {
    case: "download+extract",
    ours_s: m.ours_s,
    peer_s: m.peer_s,
    ratio,
    limit_ratio: limitRatio,
    goal: "ratio >= 1.5 and limit_ratio >= 0.85 (limit = max(download alone, extract alone))",
    met: ratio >= 1.5 && limitRatio >= 0.85,
    peer: `${AWS_CLI} s3 cp, then tar xzf`,
    details: {
      archive_bytes: archive.bytes,
      uncompressed_bytes: archive.uncompressedBytes,
      files: archive.files,
      ...m,
      limit_s: r2(limit),
      ours_mib_s: Math.round(archive.bytes / MiB / m.ours_s),
      rounds: ctx.rounds,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------

async function uploadCase(ctx: BenchContext): Promise<CaseResult> {
  const tree = await outputTree(ctx.cacheDir, ctx.log);
  const steps: Steps = {
    async peer(round) {
      const prefix = `upload/peer-${round}/`;
      const cp = await aws(ctx, ["s3", "cp", "--recursive", "--only-show-errors", tree.dir, `s3://${ctx.bucket}/${prefix}`]);
      await checkAndRemove(ctx, prefix, tree.files, tree.bytes);
      return { peer_s: cp.seconds, peer_cpu_s: cp.cpuSeconds ?? NaN };
    },
    async ours(round) {
      const prefix = `upload/ours-${round}/`;
      const m = await measured(ctx, () => uploadOutputs(tree.dir, ["**"], { bucket: ctx.bucket, key: prefix }));
      await checkAndRemove(ctx, prefix, tree.files, tree.bytes);
      return { ours_s: m.seconds, ours_cpu_s: m.cpu, server_cpu_s: m.serverCpu ?? NaN };
    },
  };
  const m = await runRounds(ctx, "upload", steps);
  const ratio = r2(m.peer_s / m.ours_s);
  return {
    case: "upload",
    ours_s: m.ours_s,
    peer_s: m.peer_s,
    ratio,
    goal: "ratio >= 1.5",
    met: ratio >= 1.5,
    peer: `${AWS_CLI} s3 cp --recursive`,
    details: {
      files: tree.files,
      bytes: tree.bytes,
      ...m,
      ours_mib_s: Math.round(tree.bytes / MiB / m.ours_s), rounds: ctx.rounds,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------

/** Size of the image layer the job's container adds (model weights, as real images carry). */
const IMAGE_LAYER_BYTES = 256 * MiB;

/**
 * A job image in the local registry: the test busybox image plus a layer of "model weights", so that the pull moves
 * real data. Only the registry holds it afterwards.
 */
async function buildJobImage(ctx: BenchContext): Promise<{ image: string; cleanup: () => Promise<void> }> {
  const { podmanTestEnv } = await import("../sandbox/podman");
  const { registryImage, registry } = await podmanTestEnv();
  const context = fresh(join(ctx.scratchDir, "image"));
  async function* weights() {
    for (let done = 0; done < IMAGE_LAYER_BYTES; done += 8 * MiB) yield randomBytes(Math.min(8 * MiB, IMAGE_LAYER_BYTES - done));
  }
  await pipeline(Readable.from(weights()), createWriteStream(join(context, "weights.bin")));
  writeFileSync(join(context, "Containerfile"), `FROM ${registryImage}\nCOPY weights.bin /opt/model/weights.bin\n`);
  const image = `${registry}/cloudcompute-bench/segmenter:1`;
  const podman = (...args: string[]) => run("podman", args, { timeoutMs: STEP_TIMEOUT_MS });
  await podman("build", "--tls-verify=false", "-t", image, context);
  await podman("push", "--tls-verify=false", image);
  await podman("rmi", "-f", image, registryImage);
  rmSync(context, { recursive: true, force: true });
  return { image, cleanup: () => removeImage(image) };
}

async function removeImage(image: string): Promise<void> {
  await run("podman", ["rmi", "-f", "--ignore", image], { timeoutMs: 60_000 }).catch(() => undefined);
}

/**
 * The job's command: checksum the T1 (reading the input), then write a 256 MiB "segmentation" and 200 small
 * per-region files, the shape of a real segmentation's results.
 */
function jobCommand(): string[] {
  const script = [
    "set -e",
    "sha256sum {input} > {output}/{subject}_T1w.sha256",
    `head -c ${256 * MiB} /opt/model/weights.bin > {output}/{subject}_seg.nii.gz`,
    "mkdir -p {output}/stats",
    'for i in $(seq 1 200); do echo "region $i" > {output}/stats/region-$i.tsv; done',
  ].join("\n");
  return ["sh", "-c", script];
}

async function overlapCase(ctx: BenchContext, archive: SubjectArchive, key: string): Promise<CaseResult> {
  const { image, cleanup } = await buildJobImage(ctx);
  try {
    const url = `s3://${ctx.bucket}/${key}`;
    const spec = () =>
      parseJobSpec({
        apiVersion: "cloudcompute/v1",
        jobId: makeJobId(BENCH_SUBJECT),
        subject: BENCH_SUBJECT,
        inputs: [{ name: "t1", url, select: "**/*_run-01_T1w.nii" }],
        container: { image, runtime: "podman", command: jobCommand() },
        outputs: { prefix: `s3://${ctx.bucket}/overlap` },
        instance: { type: "m5.4xlarge", region: ctx.server.env.AWS_REGION },
      });
    const base = join(ctx.scratchDir, "overlap");

    const steps: Steps = {
      async job() {
        await removeImage(image);
        const workdir = fresh(join(base, "job"));
        const m = await measured(ctx, () => runJob(spec(), { workdir }));
        const { marker } = m.value;
        if (marker.outcome !== "succeeded") throw new Error(`the benchmark job failed: ${marker.reason}: ${marker.message}`);
        rmSync(workdir, { recursive: true, force: true });
        return { ours_s: m.seconds, ...prefixKeys("job_phase_", marker.timings as Record<string, number>) };
      },
      // The same work one stage at a time, each measured alone.
      async stages(round) {
        const job = spec();
        const inputsDir = fresh(join(base, "stages", "inputs"));
        const outputsDir = fresh(join(base, "stages", "outputs"));
        const download = await timed(() => fetchInput(job.inputs[0], join(inputsDir, "t1")));
        await settleDisk();
        await removeImage(image);
        const pull = await timed(() => pullImage({ runtime: "podman", image }));
        const command = expandCommand(job.container.command, {
          inputs: [{ name: "t1", files: download.value.selected.map((file) => `${CONTAINER_PATHS.inputs}/t1/${file}`) }],
          output: CONTAINER_PATHS.output,
          subject: job.subject,
          jobId: job.jobId,
        });
        const runStep = await timed(() =>
          runContainer({
            runtime: "podman",
            image,
            command,
            workdir: CONTAINER_PATHS.workdir,
            mounts: [
              { host: join(inputsDir, "t1"), container: `${CONTAINER_PATHS.inputs}/t1`, readOnly: true },
              { host: outputsDir, container: CONTAINER_PATHS.output },
            ],
          }),
        );
        if (runStep.value.exitCode !== 0) throw new Error(`the job's container failed alone: ${runStep.value.tail}`);
        await settleDisk();
        const prefix = `overlap-stages/${round}/`;
        const upload = await timed(() => uploadOutputs(outputsDir, ["**"], { bucket: ctx.bucket, key: prefix }));
        rmSync(join(base, "stages"), { recursive: true, force: true });
        return { download_s: download.seconds, pull_s: pull.seconds, run_s: runStep.seconds, upload_s: upload.seconds };
      },
    };
    const m = await runRounds(ctx, "overlap", steps);
    const limit = Math.max(m.pull_s, m.download_s) + m.run_s + m.upload_s;
    const sequential = m.pull_s + m.download_s + m.run_s + m.upload_s;
    return {
      case: "overlap",
      ours_s: m.ours_s,
      peer_s: r2(sequential),
      ratio: r2(sequential / m.ours_s),
      limit_ratio: r2(limit / m.ours_s),
      goal: "ours_s <= max(pull, download) + run + upload + 2 s (peer_s is the sequential sum of the same stages)",
      met: m.ours_s <= limit + 2,
      peer: "the same stages run one after another (pull, download+extract, run, upload), measured alone",
      details: { ...m, limit_s: r2(limit), bound_s: r2(limit + 2), sequential_s: r2(sequential), image, image_layer_bytes: IMAGE_LAYER_BYTES, rounds: ctx.rounds },
    };
  } finally {
    await cleanup();
  }
}

function prefixKeys(prefix: string, values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [`${prefix}${k}_s`, v]));
}

export type AgentCase = "download" | "upload" | "overlap";
export const AGENT_CASES: AgentCase[] = ["download", "upload", "overlap"];

export async function agentCases(ctx: BenchContext, which: AgentCase[] = AGENT_CASES): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  let input: { archive: SubjectArchive; key: string } | undefined;
  const stagedArchive = async () => {
    if (input) return input;
    const archive = await subjectArchive(ctx.cacheDir, ctx.log);
    const key = `inputs/${BENCH_SUBJECT}/${archive.path.split("/").pop()}`;
    ctx.log(`staging the ${r2(archive.bytes / MiB / 1024)} GiB archive at s3://${ctx.bucket}/${key}`);
    await uploadFixture(ctx, archive.path, key);
    input = { archive, key };
    return input;
  };
  if (which.includes("download")) {
    const { archive, key } = await stagedArchive();
    results.push(await downloadExtractCase(ctx, archive, key));
  }
  if (which.includes("upload")) results.push(await uploadCase(ctx));
  if (which.includes("overlap")) {
    const { podmanAvailable } = await import("../sandbox/podman");
    if (!podmanAvailable() || !existsSync("/usr/bin/docker-registry")) {
      ctx.log("overlap case skipped: it needs podman and /usr/bin/docker-registry");
    } else {
      const { archive, key } = await stagedArchive();
      results.push(await overlapCase(ctx, archive, key));
    }
  }
  return results;
}
