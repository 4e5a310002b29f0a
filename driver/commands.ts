/** The commands besides running jobs: status, logs, history, list, cancel, gc. */
import { LocalWorkspace, type Stack, type UpdateSummary } from "@pulumi/pulumi/automation";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseS3Url } from "../job/s3url";
import { WORKDIR_NAMES } from "../job/layout";
import { belongsToLaunch, parseCompletionMarker } from "../job/records";
import { errorMessage } from "../common/errors";
import { defaultLocalWorkDir, staleLocalData } from "../infra/local";
import { InfraError } from "./errors";
import { engineEnv, explainEngineError, findPulumi, engineLetGo, openJobStack, PROJECT_NAME, resourceCount } from "./engine";
import { JobRecord, listJobRecords, readJobRecord, recordOwner, updateJobRecord } from "./jobindex";
import { jobRecordFor } from "./inspect";
import { describeOwner, Owner, ownerFromTags, ownerState } from "./owner";
import { backendUrl, cloudcomputeHome } from "../common/paths";
import { awsPlatform, Orphan, Platform, platformNamed } from "./platform";
import { readRecord, readText } from "./s3";
import { teardown } from "./teardown";
import { jobListTable, printable, table } from "./summary";
import { sleep } from "./wait";

/** Print the agent's log; with `follow`, keep printing what is appended until the job has ended. */
export async function printLogs(jobId: string | undefined, follow: boolean, out: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  const record = jobRecordFor(jobId);
  const log = parseS3Url(record.logUrl);
  // A local job's agent keeps its whole log on disk: read there when S3 cannot be (its endpoint stopped, no keys).
  const localLog = record.platform === "local" ? path.join(defaultLocalWorkDir(record.jobId), WORKDIR_NAMES.log) : undefined;
  const readLog = async (from: number): Promise<string | undefined> => {
    try {
      return await readText(log, from);
    } catch (err) {
      if (!localLog || !fs.existsSync(localLog)) throw new InfraError(`could not read ${record.logUrl}: ${errorMessage(err)} (credentials: AWS_PROFILE or AWS_ACCESS_KEY_ID; an S3-compatible endpoint: AWS_ENDPOINT_URL)`);
      return fs.readFileSync(localLog).subarray(from).toString("utf8");
    }
  };
  let offset = 0;
  for (;;) {
    const text = await readLog(offset);
    if (text) {
      out.write(printable(text));
      offset += Buffer.byteLength(text);
    }
    if (!follow) {
      if (text === undefined) process.stderr.write(`no log yet at ${record.logUrl}\n`);
      return;
    }
    const current = readJobRecord(record.jobId);
    const ended = current && !["creating", "running"].includes(current.state);
    // The agent uploads its log once more after the marker: one last read once the job is over.
    if (ended) {
      const rest = await readLog(offset);
      if (rest) out.write(rest);
      return;
    }
    await sleep(2000, signal).catch(() => undefined);
    if (signal.aborted) return;
  }
}

export { formatStatus, jobRecordFor, jobStatus, listJobs, type JobStatusReport } from "./inspect";
export { jobListTable };

/** The stacks in the backend with their resource counts (`list --stacks`, `gc`). Slow on big S3 backends. */
export async function backendStacks(backend?: string): Promise<Array<{ name: string; resourceCount?: number; lastUpdate?: string }>> {
  const workDir = path.join(cloudcomputeHome(), "work", "_list");
  fs.mkdirSync(workDir, { recursive: true });
  const env = engineEnv({ backend });
  const ws = await LocalWorkspace.create({
    workDir,
    envVars: env,
    pulumiCommand: await findPulumi(),
    projectSettings: { name: PROJECT_NAME, runtime: "nodejs", backend: { url: env.PULUMI_BACKEND_URL } },
  });
  const stacks = await ws.listStacks();
  return stacks.map((s) => ({ name: s.name, resourceCount: s.resourceCount, lastUpdate: s.lastUpdate }));
}

export interface HistoryEntry {
  version: number;
  kind: string;
  result: string;
  startTime: string;
  endTime?: string;
  resourceChanges?: Record<string, number>;
}

/**
 * A job's audit trail: the stack's update history (up, refresh, destroy), read from the backend the job used — what
 * `pulumi stack history` shows, without the user having to find the job's workspace, backend and CLI.
 */
export async function jobHistory(jobId: string | undefined, backend?: string): Promise<{ jobId: string; entries: HistoryEntry[] }> {
  const record = jobId === undefined ? jobRecordFor(undefined) : readJobRecord(jobId);
  const id = jobId ?? record!.jobId;
  const stack = await openJobStack({ jobId: id, backend: backend ?? record?.backend, mustExist: true });
  const history = await stack.history().catch((err: unknown) => {
    throw explainEngineError(err, id);
  });
  return { jobId: id, entries: history.map(historyEntry) };
}

function historyEntry(entry: UpdateSummary): HistoryEntry {
  return {
    version: entry.version,
    kind: entry.kind,
    result: entry.result,
    startTime: new Date(entry.startTime).toISOString(),
    endTime: entry.endTime ? new Date(entry.endTime).toISOString() : undefined,
    resourceChanges: entry.resourceChanges as Record<string, number> | undefined,
  };
}

export function formatHistory(jobId: string, entries: HistoryEntry[]): string {
  const changes = (entry: HistoryEntry) =>
    Object.entries(entry.resourceChanges ?? {})
      .filter(([, count]) => count > 0)
      .map(([op, count]) => `${op} ${count}`)
      .join(", ");
  // File backends report version 0 for every update: number them in time order instead.
  const rows = [...entries].sort((a, b) => a.startTime.localeCompare(b.startTime)).map((entry, i) => [String(i + 1), entry.kind, entry.result, entry.startTime, entry.endTime ?? "", changes(entry)]);
  return `history of ${jobId}:\n` + table(["#", "KIND", "RESULT", "STARTED", "ENDED", "RESOURCES"], rows);
}

/**
 * Cancel a job: a driver still working on it is interrupted (it destroys and exits 130); otherwise the stack's
 * lock is cleared and the stack refreshed and destroyed here.
 */
export async function cancelJob(jobId: string, log: (line: string) => void, backend?: string): Promise<void> {
  const record = readJobRecord(jobId);
  const owner = record && recordOwner(record);
  // Only a driver proven alive (same host, same PID start time) is signalled: a reused PID belongs to somebody else.
  if (owner && ownerState(owner) === "alive" && owner.pid !== process.pid && record?.batchId) {
    // A batch waits on many jobs: ask it to stop this one only (a request file, then SIGUSR2; batch-scheduler.ts).
    const requests = path.join(cloudcomputeHome(), "batches", record.batchId, "cancel");
    fs.mkdirSync(requests, { recursive: true });
    fs.writeFileSync(path.join(requests, jobId), "");
    log(`asking batch ${record.batchId} (pid ${owner.pid}) to stop ${jobId}; it destroys the job's resources`);
    process.kill(owner.pid!, "SIGUSR2");
    const deadline = Date.now() + 10 * 60_000;
    const ended = () => ["succeeded", "failed", "error", "interrupted"].includes(readJobRecord(jobId)?.state ?? "");
    while (!ended() && ownerState(owner) === "alive" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    if (ended()) {
      const finished = readJobRecord(jobId);
      log(`batch finished the job: ${finished?.state}${finished?.reason && finished.reason !== finished.state ? ` (${finished.reason})` : ""}; the batch goes on with its other jobs`);
      return;
    }
    log("the batch did not finish the job within 10 minutes: destroying from here");
  } else if (owner && ownerState(owner) === "alive" && owner.pid !== process.pid) {
    const pid = owner.pid!;
    log(`interrupting driver pid ${pid} of ${jobId}; it destroys the job's resources`);
    process.kill(pid, "SIGINT");
    const deadline = Date.now() + 10 * 60_000;
    while (ownerState(owner) === "alive" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    if (ownerState(owner) !== "alive") {
      log(`driver finished: ${readJobRecord(jobId)?.state ?? "unknown"}`);
      return;
    }
    log("the driver did not finish within 10 minutes: destroying from here");
  }
  // A driver killed by SIGKILL leaves its engine running in a session of its own: clearing its lock and destroying
  // under it would race its update, which could record an instance after our destroy. Let it finish first.
  await engineLetGo(backendUrl(backend ?? record?.backend), jobId, log);
  const stack = await openJobStack({ jobId, backend: backend ?? record?.backend, mustExist: true });
  const tagged = ownerFromTags(await stack.listTags().catch(() => ({})));
  if (!owner && tagged && ownerState(tagged) === "unknown") log(`${jobId} belongs to ${describeOwner(tagged)}; destroying it from here as asked`);
  try {
    await stack.cancel(); // clears a lock left by a killed driver; harmless when there is none
  } catch {
    /* no update in progress */
  }
  const reclaimed = await teardown(stack, jobId, "cloudcompute job: cancelled", { platform: await jobPlatform(stack, record), region: record?.region });
  for (const line of reclaimed) log(`${jobId}: deleted what a cut-off update had not recorded: ${line}`);
  // The job may have ended by itself before we came (its driver killed while it ran on): its own marker says how.
  const marker = record?.launchId ? await readRecord(parseS3Url(record.markerUrl), parseCompletionMarker).catch(() => undefined) : undefined;
  const ended = marker && belongsToLaunch(marker, { launchId: record!.launchId! }) ? marker : undefined;
  const finished = record && ["succeeded", "failed"].includes(record.state);
  updateJobRecord(jobId, {
    state: finished ? record!.state : ended ? ended.outcome : record?.state === "error" ? "error" : "interrupted",
    driverPid: undefined,
    endedAt: record?.endedAt ?? new Date().toISOString(),
    reason: record?.reason ?? (ended ? ended.reason : "cancelled"),
  });
  log(`${jobId}: resources destroyed (${await resourceCount(stack)} left), history kept`);
}


/** The platform a job ran on: its record says, else the state (any AWS resource, pending or recorded, means aws). */
async function jobPlatform(stack: Stack, record: JobRecord | undefined): Promise<Platform> {
  if (record) return platformNamed(record.platform);
  const state = JSON.stringify((await stack.exportStack()).deployment ?? {});
  return platformNamed(/"type":"aws:/.test(state) ? "aws" : "local");
}

export interface GcReport {
  destroyed: string[];
  failed: Array<{ jobId: string; error: string }>;
  /** Stacks holding resources whose owner cannot be proven gone (another host's driver, or no owner recorded). */
  leftAlone: Array<{ jobId: string; owner: string }>;
  orphans: Orphan[];
  /** Local jobs whose inputs and outputs were still on disk with no agent running: deleted (logs kept). */
  localDataRemoved: string[];
}

/** A stack's owner: from the local record, else from the stack's tags (a driver on another machine). */
async function stackOwner(jobId: string, backend: string | undefined): Promise<Partial<Owner> | undefined> {
  const record = readJobRecord(jobId);
  const fromRecord = record && recordOwner(record);
  if (fromRecord) return fromRecord;
  const stack = await openJobStack({ jobId, backend, mustExist: true });
  return ownerFromTags(await stack.listTags());
}

/**
 * Destroy stacks that still hold resources while no driver works on them, and report cloudcompute instances that no
 * stack owns (not terminated here: their job id tag tells the user which job to look at).
 */
export async function gc(options: { dryRun: boolean; backend?: string; aws: boolean; log: (line: string) => void }): Promise<GcReport> {
  const report: GcReport = { destroyed: [], failed: [], leftAlone: [], orphans: [], localDataRemoved: [] };
  const stacks = await backendStacks(options.backend);
  for (const stack of stacks) {
    if (!stack.resourceCount) continue;
    // With a shared backend, other machines' running jobs are listed too: destroy only what is provably abandoned.
    const owner = await stackOwner(stack.name, options.backend).catch(() => undefined);
    const state = ownerState(owner);
    if (state === "alive") continue; // still being worked on
    if (state === "unknown") {
      report.leftAlone.push({ jobId: stack.name, owner: describeOwner(owner) });
      options.log(`left alone: ${stack.name} (${stack.resourceCount} resources) belongs to ${describeOwner(owner)}, which this machine cannot prove gone; ` + `cancel it explicitly with  npm run job -- cancel ${stack.name}`);
      continue;
    }
    if (options.dryRun) {
      options.log(`would destroy ${stack.name} (${stack.resourceCount} resources)`);
      report.destroyed.push(stack.name);
      continue;
    }
    try {
      await cancelJob(stack.name, options.log, options.backend);
      report.destroyed.push(stack.name);
    } catch (err) {
      report.failed.push({ jobId: stack.name, error: errorMessage(err) });
    }
  }
  if (options.aws) {
    const records = listJobRecords();
    const owned = new Set(records.filter((r) => r.instanceId && ["creating", "running", "destroying"].includes(r.state) && ownerState(recordOwner(r)) !== "dead").map((r) => r.instanceId!));
    // Every region a job of this machine ran in, not just the default one.
    const regions = new Set(records.filter((r) => r.platform === "aws" && r.region).map((r) => r.region!));
    // An instance whose job has a stack holding resources in the backend is that stack's, whichever machine runs it.
    const destroyed = new Set(report.destroyed);
    const stacked = new Set(stacks.filter((s) => s.resourceCount && !destroyed.has(s.name)).map((s) => s.name));
    report.orphans = (await awsPlatform.findOrphans(owned, regions)).filter((o) => !o.jobId || !stacked.has(o.jobId));
    if (report.orphans.length > 0) {
      options.log(`instances tagged by cloudcompute whose job has no stack with resources in this backend (a job of another backend may still own one: check JOB before terminating):\n${table(["INSTANCE", "JOB", "STATE", "LAUNCHED"], report.orphans.map((o) => [o.instanceId, o.jobId ?? "", o.state ?? "", o.launchedAt ?? ""]))}`);
    }
  }
  // A local job's data outlives it only by accident; stacks still holding resources keep theirs until destroyed.
  // Last, so that nothing on this disk can stand in the way of the orphan search above.
  const holding = new Set(stacks.filter((s) => s.resourceCount && !report.destroyed.includes(s.name)).map((s) => s.name));
  const local = staleLocalData(holding, !options.dryRun);
  report.localDataRemoved = local.found;
  for (const jobId of local.found) options.log(`${options.dryRun ? "would delete" : "deleted"} the inputs and outputs left in ${defaultLocalWorkDir(jobId)} (logs kept)`);
  for (const { jobId, error } of local.failed) {
    const dir = defaultLocalWorkDir(jobId);
    options.log(`could not delete the data left in ${dir}: ${error} (files a container wrote as root: sudo rm -rf ${dir}/inputs ${dir}/outputs)`);
    report.failed.push({ jobId, error: `local data: ${error}` });
  }
  return report;
}
