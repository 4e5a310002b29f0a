/**
 * One job, start to finish: inputs downloaded and extracted while the image is pulled, the container run under the
 * job's time limit, outputs uploaded and verified, then provenance, final status and log, and the completion marker
 * LAST. A failure anywhere becomes a failure marker with its phase and reason; never a success marker.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { CONTAINER_PATHS, jobContainerName, jobLayout, RECORD_NAMES, WORKDIR_NAMES } from "../job/layout";
import {
  failureMarker,
  provenanceRecord,
  successMarker,
  type CompletionMarker,
  type OutputObject,
  type Phase,
  type ProvenanceRecord,
} from "../job/records";
import { formatS3Url } from "../job/s3url";
import { redactSpec, type JobSpec } from "../job/spec";
import { expandCommand } from "../job/command";
import { pullImage, runContainer, type PulledImage, type RunResult } from "./container";
import { inputMounts } from "./mounts";
import { errorMessage } from "../common/errors";
import { isOutOfDisk, JobFailure, toJobFailure } from "./errors";
import { fetchInput, type FetchedInput, type FetchInputOptions } from "./inputs";
import { instanceInfo } from "./instance";
import type { SkippedLink } from "./output-files";
import { OutputUploadError, uploadOutputs, type UploadOptions } from "./outputs";
import { promoteResults } from "./promote";
import { ensureDatasetDescription } from "./dataset-description";
import { datasetDescription } from "../job/bids";
import { JobLog, putJson, Reporter } from "./report";
import { mapLimit } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import { seconds } from "../common/time";
import { AGENT_VERSION } from "./version";

export interface AgentOptions {
  /** Local working directory: inputs/, outputs/ and the job log go here (job/layout WORKDIR_NAMES). */
  workdir: string;
  /** S3 client for the job's own bucket (control area, outputs) and role inputs; default from the environment. */
  client?: S3Client;
  statusIntervalMs?: number;
  logIntervalMs?: number;
  /** Overrides limits.maxRuntimeMinutes (tests use seconds). */
  maxRuntimeMs?: number;
  download?: Pick<FetchInputOptions, "partSize" | "concurrency">;
  upload?: Pick<UploadOptions, "partSize" | "queueSize" | "fileConcurrency" | "attempts" | "retryBaseDelayMs">;
  /** Copy log lines to stderr. */
  echo?: boolean;
  /** Aborting it (SIGTERM: the machine is shutting down) stops the job: container killed, failure marker written. */
  signal?: AbortSignal;
}

/** What the agent's run of a job ends with (the driver's `JobResult` is the job as a whole). */
export interface AgentRunResult {
  marker: CompletionMarker;
  provenance: ProvenanceRecord;
}

export async function runAgentJob(spec: JobSpec, opts: AgentOptions): Promise<AgentRunResult> {
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const layout = jobLayout(spec);
  const client = opts.client ?? s3ClientFor(layout.control.bucket, { region: spec.instance.region });
  const workdir = path.resolve(opts.workdir);
  const inputsDir = path.join(workdir, WORKDIR_NAMES.inputs);
  const outputsDir = path.join(workdir, WORKDIR_NAMES.outputs);
  await fsp.mkdir(workdir, { recursive: true });
  // A rerun in the same directory must not see (or upload) a previous run's files.
  await fsp.rm(inputsDir, { recursive: true, force: true });
  await fsp.rm(outputsDir, { recursive: true, force: true });
  await fsp.mkdir(inputsDir);
  await fsp.mkdir(outputsDir);
  await fsp.chmod(outputsDir, 0o777); // images often run as a non-root user

  const log = new JobLog(path.join(workdir, WORKDIR_NAMES.log), opts.echo);
  // Asked once, first: status and marker name the instance, so a reader can tell this launch from an earlier one.
  const instance = await instanceInfo();
  const identity = { jobId: spec.jobId, launchId: spec.launchId, instanceId: instance.id };
  const reporter = new Reporter(client, layout, identity, log, opts);
  log.line(`cloudcompute agent ${AGENT_VERSION}: job ${spec.jobId}, subject ${spec.subject}`);
  reporter.start();

  const timings: Partial<Record<Phase, number>> = {};
  const timed = async <T>(phase: Phase, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      timings[phase] = seconds(Date.now() - t0);
      reporter.endPhase(phase);
    }
  };

  // The agent enforces the runtime limit itself: the watchdog in user-data only backs it up.
  const maxRuntimeMs = opts.maxRuntimeMs ?? spec.limits.maxRuntimeMinutes * 60_000;
  const deadline = started + maxRuntimeMs;
  const jobAbort = new AbortController();
  const deadlineTimer = setTimeout(
    () => jobAbort.abort(new JobFailure("max-runtime", `max runtime of ${seconds(maxRuntimeMs)} s reached`)),
    maxRuntimeMs,
  );
  const onStop = () => jobAbort.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onStop();
  else opts.signal?.addEventListener("abort", onStop, { once: true });

  let phase: Phase = "starting";
  let failure: JobFailure | undefined;
  /** Inputs as they finish: an input that failed does not hide the others from the record. */
  const fetchedByName = new Map<string, FetchedInput>();
  let command: string[] | undefined;
  let image: PulledImage | undefined;
  let run: RunResult | undefined;
  let outputs: OutputObject[] = [];
  const skippedLinks: SkippedLink[] = [];
  /** Where the outputs are: the job's own area until a successful job has promoted them to the results. */
  let outputPrefix = layout.outputs;
  let ranContainer = false;

  try {
    // --- inputs and image pull, side by side -------------------------------------------------------------------
    phase = "inputs";
    reporter.beginPhase(
      "inputs",
      spec.container.runtime === "none"
        ? `downloading ${spec.inputs.length} input(s)`
        : `downloading ${spec.inputs.length} input(s) while pulling ${spec.container.image}`,
    );
    reporter.beginPhase("pull");
    reporter.status.phase = "inputs";
    const prep = new AbortController();
    const onJobAbort = () => prep.abort(jobAbort.signal.reason);
    jobAbort.signal.addEventListener("abort", onJobAbort);
    let first: JobFailure | undefined;
    const failFirst = (failedPhase: Phase) => (err: unknown) => {
      first ??= toJobFailure(err, failedPhase, failedPhase === "pull" ? "image-pull-failed" : "missing-input");
      prep.abort(first);
      throw err;
    };
    const inputBytes = new Map<string, { done: number; total?: number }>();
    const inputsTask = timed("inputs", () =>
      mapLimit(spec.inputs, 2, async (input) => {
        const got = await fetchInput(input, path.join(inputsDir, input.name), {
          ...opts.download,
          client: opts.client,
          signal: prep.signal,
          log: (line) => log.line(line),
          onProgress: (done, total) => {
            inputBytes.set(input.name, { done, total });
            const all = [...inputBytes.values()];
            reporter.progress("inputs", all.reduce((s, v) => s + v.done, 0), all.reduce((s, v) => s + (v.total ?? 0), 0));
          },
        });
        fetchedByName.set(input.name, got);
        return got;
      }),
    ).catch(failFirst("inputs"));
    // A finished pull is recorded (its digest) even when an input or the run fails later.
    const pullTask = timed("pull", () =>
      pullImage({ runtime: spec.container.runtime, image: spec.container.image, workdir, signal: prep.signal, output: log.raw() }),
    )
      .then((pulled) => (image = pulled))
      .catch(failFirst("pull"));
    await Promise.allSettled([inputsTask, pullTask]);
    jobAbort.signal.removeEventListener("abort", onJobAbort);
    if (jobAbort.signal.aborted) throw toJobFailure(jobAbort.signal.reason, first?.phase ?? "inputs");
    if (first) throw first;
    const fetched = await inputsTask;
    const pulled = await pullTask;
    log.line(`image ${pulled.reference}${pulled.digest ? ` (${pulled.digest})` : ""} ready`);

    // --- run ------------------------------------------------------------------------------------------------------
    phase = "run";
    const program = spec.container.runtime === "none" ? (spec.container.entrypoint ?? spec.container.command[0] ?? "") : spec.container.image;
    reporter.beginPhase("run", `running ${program} (${spec.container.runtime})`);
    const inContainer = spec.container.runtime !== "none";
    const inputPath = (input: FetchedInput, file: string) =>
      inContainer ? path.posix.join(CONTAINER_PATHS.inputs, input.name, file) : path.join(inputsDir, input.name, file);
    const expanded = expandCommand(spec.container.command, {
      inputs: fetched.map((input) => ({ name: input.name, files: input.selected.map((file) => inputPath(input, file)) })),
      output: inContainer ? CONTAINER_PATHS.output : outputsDir,
      subject: spec.subject,
      jobId: spec.jobId,
    });
    command = expanded;
    const mounts = inContainer ? [...(await inputMounts(fetched, inputsDir)), { host: outputsDir, container: CONTAINER_PATHS.output }] : [];
    log.line(`running ${JSON.stringify(expanded)} with ${spec.container.runtime}`);
    ranContainer = true;
    run = await timed("run", () =>
      runContainer({
        runtime: spec.container.runtime,
        image: pulled.runRef,
        command: expanded,
        entrypoint: spec.container.entrypoint,
        env: spec.container.env,
        gpus: spec.container.gpus,
        network: spec.container.network,
        mounts,
        workdir: inContainer ? CONTAINER_PATHS.workdir : workdir,
        name: jobContainerName(spec.jobId, process.pid),
        output: log.raw(),
        deadline,
        signal: jobAbort.signal,
      }),
    );
    log.line(`exit code ${run.exitCode ?? "none"}${run.signal ? ` (signal ${run.signal})` : ""} after ${run.seconds} s`);
    if (jobAbort.signal.aborted && !run.timedOut) {
      // Stopped from outside (SIGTERM): say why, not just the kill's exit code.
      const stopped = toJobFailure(jobAbort.signal.reason, "run");
      failure = new JobFailure(stopped.reason, `${stopped.message} (the container was stopped)`, "run");
    } else if (run.timedOut) {
      failure = new JobFailure("max-runtime", `max runtime of ${seconds(maxRuntimeMs)} s reached: the container was killed`, "run");
    } else if (run.exitCode !== 0) {
      const last = run.tail.trim().split("\n").slice(-2).join(" | ");
      const reason = isOutOfDisk({ message: run.tail }) ? "out-of-disk" : "container-failed";
      failure = new JobFailure(reason, `the container exited with ${run.exitCode ?? `signal ${run.signal}`}: ${last}`, "run");
    }

    // --- outputs ----------------------------------------------------------------------------------------------------
    phase = "outputs";
    // Every job uploads to its own area; only a successful one then promotes the set to the subject's results, so a
    // failure or a deadline mid-upload never leaves results of two runs mixed (agent/promote.ts).
    reporter.beginPhase("outputs", `uploading to ${formatS3Url(layout.outputs)}`);
    try {
      outputs = await timed("outputs", async () => {
        const uploaded = await uploadOutputs(outputsDir, spec.outputs.globs, layout.outputs, {
          ...opts.upload,
          client: opts.client,
          signal: jobAbort.signal,
          log: (line) => log.line(line),
          onProgress: (done, total) => reporter.progress("outputs", done, total),
          onSkippedLink: (link) => skippedLinks.push(link),
        });
        outputs = uploaded; // what a failed promotion leaves: the whole set, in the job's area
        if (failure || uploaded.length === 0) return uploaded;
        jobAbort.signal.throwIfAborted();
        const promoted = await promoteResults(uploaded, layout.outputs, layout.results, layout.resultsPointer, {
          client,
          jobId: spec.jobId,
          launchId: spec.launchId,
          subject: spec.subject,
          log: (line) => log.line(line),
        });
        outputPrefix = layout.results;
        if (layout.datasetDescription) {
          // After the promotion: the prefix becomes a BIDS dataset only once it holds a subject's results.
          const described = { runtime: spec.container.runtime, reference: spec.container.image, digest: image?.digest };
          await ensureDatasetDescription(client, layout.datasetDescription, datasetDescription(described, AGENT_VERSION), (line) => log.line(line));
        }
        return promoted;
      });
    } catch (err) {
      if (err instanceof OutputUploadError) outputs = err.uploaded;
      if (jobAbort.signal.aborted) throw toJobFailure(jobAbort.signal.reason, "outputs");
      if (!failure) throw err;
      log.line(`warning: partial outputs of the failed job could not all be uploaded: ${errorMessage(err)}`);
    }
    if (!failure && outputs.length === 0) {
      failure = new JobFailure(
        "container-failed",
        `the container exited 0 but wrote no file matching ${JSON.stringify(spec.outputs.globs)} in ${CONTAINER_PATHS.output}`,
        "outputs",
      );
    }
  } catch (err) {
    failure = toJobFailure(err, phase);
    if (err instanceof OutputUploadError) outputs = err.uploaded;
  } finally {
    clearTimeout(deadlineTimer);
  }

  // --- finishing: provenance, final status and log, then the marker ------------------------------------------------
  reporter.beginPhase("finishing");
  const finishingStarted = Date.now();
  const partial = failure !== undefined && outputs.length > 0;
  if (failure) log.line(`job failed in phase ${failure.phase ?? phase}: ${failure.reason}: ${failure.message}`);
  const bytes = outputs.reduce((sum, o) => sum + o.size, 0);
  const exitCode = ranContainer && run ? (run.exitCode ?? undefined) : undefined;
  const provenance = provenanceRecord({
    agentVersion: AGENT_VERSION,
    launchId: spec.launchId,
    spec: redactSpec(spec),
    image: spec.container.runtime === "none" ? undefined : { reference: spec.container.image, digest: image?.digest },
    inputs: spec.inputs.flatMap((wanted) => fetchedByName.get(wanted.name) ?? []).map((input) => ({
      name: input.name,
      url: input.url,
      bytes: input.bytes,
      sha256: input.sha256,
      etag: input.etag,
      files: input.files,
      selected: input.digests,
      mount: input.mount,
    })),
    command,
    outputs,
    skippedLinks: skippedLinks.length > 0 ? skippedLinks : undefined,
    partialOutputs: partial,
    exitCode,
    timings,
    instance,
    startedAt,
    finishedAt: new Date().toISOString(),
    outcome: failure ? "failed" : "succeeded",
    reason: failure?.reason,
  });
  try {
    await putJson(client, layout.provenance, provenance);
  } catch (err) {
    log.line(`provenance could not be written: ${errorMessage(err)}`);
    if (!failure) failure = new JobFailure("output-upload-failed", `provenance record could not be written: ${errorMessage(err)}`, "finishing");
  }
  const summary = failure
    ? failure.message
    : `succeeded: ${outputs.length} output(s), ${bytes} bytes in ${formatS3Url(outputPrefix)} after ${seconds(Date.now() - started)} s` +
      (skippedLinks.length > 0
        ? `; ${skippedLinks.length} symbolic link(s) leading outside the outputs not uploaded (${skippedLinks.slice(0, 3).map((l) => l.path).join(", ")}${skippedLinks.length > 3 ? ", ..." : ""}; see ${RECORD_NAMES.provenance})`
        : "");
  reporter.stop();
  reporter.status.message = summary;
  reporter.beginPhase("done", summary);
  await reporter.writeStatus();
  log.line(failure ? "writing failure marker" : "writing success marker");
  await reporter.uploadLog();
  // Measured, not derived from the total: inputs and pull overlap, so the phases do not add up to the wall time.
  timings.finishing = seconds(Date.now() - finishingStarted);
  const markerFields = {
    ...identity,
    subject: spec.subject,
    message: summary,
    exitCode,
    startedAt,
    finishedAt: new Date().toISOString(),
    outputs: { prefix: formatS3Url(outputPrefix), count: outputs.length, bytes, partial },
    timings,
  };
  const marker = failure
    ? failureMarker({ ...markerFields, phase: failure.phase ?? phase, reason: failure.reason })
    : successMarker(markerFields);
  await putJson(client, layout.marker, marker);
  log.line(`marker written to ${formatS3Url(layout.marker)}`);
  await log.close();
  return { marker, provenance: { ...provenance, outcome: marker.outcome, reason: marker.reason } };
}
