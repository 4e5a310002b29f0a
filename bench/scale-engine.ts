/**
 * `npm run bench -- scale`, the figures with the real engine: the real CLI (`node bin/cloudcompute.js`) on the local
 * platform (runtime none) in a driver sandbox (moto, a private CLOUDCOMPUTE_HOME, the file backend).
 * - throughput: jobs per minute of launch + teardown at --engine-concurrency 1 and at the default, with the batch
 *   tree's memory sampled (the largest engine worker's subtree, the whole tree);
 * - two drivers at once on the same subjects: completion markers per subject (duplicate runs);
 * - a batch SIGKILLed mid-way and started again: one success per subject, no extra job, no stack left holding anything.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { JobRecord } from "../driver/jobindex";
import { defaultEngineConcurrency } from "../driver/worker-env";
import { batchResultOf, localJobConfig, markersBySubject, type CliResult, type DriverSandbox } from "../sandbox/driver-sandbox";
import { TreeSampler } from "./scale-rss";

type Log = (line: string) => void;
const r1 = (value: number) => Math.round(value * 10) / 10;
/** A command that ends at once, leaving one output (the subject's T1w copied). */
const COPY_INPUT = ["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"];
const subjectsNamed = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(2, "0")}`);

function subjectsFile(sandbox: DriverSandbox, name: string, subjects: string[]): string {
  const file = path.join(sandbox.home, `${name}.txt`);
  fs.writeFileSync(file, subjects.join("\n") + "\n");
  return file;
}

function requireSuccess(what: string, res: CliResult, subjects: string[]): void {
  if (res.code !== 0) throw new Error(`${what} exited ${res.code ?? res.signal}:\n${res.stderr.slice(-3000)}`);
  const failed = batchResultOf(res.stdout).entries.filter((e) => e.outcome !== "succeeded");
  if (failed.length > 0 || batchResultOf(res.stdout).entries.length !== subjects.length) throw new Error(`${what}: not every subject succeeded: ${JSON.stringify(failed)}`);
}

export interface ThroughputFigure {
  subjects: number;
  concurrency: number;
  engine_concurrency_default: number;
  jobs_per_min_engine_1: number;
  jobs_per_min_default: number;
  /** default / engine 1. */
  speedup: number;
  seconds_engine_1: number;
  seconds_default: number;
  engine_worker_peak_rss_mb: number;
  /** The whole batch tree (the batch process and its engine workers) at its peak, per run. */
  tree_peak_rss_mb_engine_1: number;
  tree_peak_rss_mb_default: number;
}

export async function throughputFigure(sandbox: DriverSandbox, log: Log, subjectsPerRun = 8): Promise<ThroughputFigure> {
  const config = sandbox.writeConfig("throughput.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: COPY_INPUT }));
  const runs: Array<{ seconds: number; treePeak: number; workerPeak: number }> = [];
  const engineDefault = defaultEngineConcurrency();
  for (const [name, engines] of [["engine1", 1], ["default", undefined]] as const) {
    const subjects = subjectsNamed(`sub-tp-${name}-`, subjectsPerRun);
    await sandbox.seed(subjects);
    const args = ["--config", config, "--subjects-file", subjectsFile(sandbox, `tp-${name}`, subjects), "--platform", "local", "--runtime", "none", "--concurrency", String(subjectsPerRun), "--json"];
    if (engines !== undefined) args.push("--engine-concurrency", String(engines));
    let sampler: TreeSampler | undefined;
    const started = Date.now();
    const res = await sandbox.run(args, { onSpawn: (child) => (sampler = new TreeSampler(child.pid!)) });
    const seconds = (Date.now() - started) / 1000;
    sampler?.stop();
    requireSuccess(`the throughput batch (${name})`, res, subjects);
    runs.push({ seconds, treePeak: sampler?.peak("treeMb") ?? 0, workerPeak: sampler?.peak("largestChildMb") ?? 0 });
    log(`throughput: ${subjectsPerRun} jobs at engine concurrency ${engines ?? `${engineDefault} (default)`} in ${r1(seconds)} s; tree peak ${r1(runs.at(-1)!.treePeak)} MB`);
  }
  const perMin = (seconds: number) => r1((subjectsPerRun / seconds) * 60);
  return {
    subjects: subjectsPerRun,
    concurrency: subjectsPerRun,
    engine_concurrency_default: engineDefault,
    jobs_per_min_engine_1: perMin(runs[0].seconds),
    jobs_per_min_default: perMin(runs[1].seconds),
    speedup: Math.round((runs[0].seconds / runs[1].seconds) * 100) / 100,
    seconds_engine_1: r1(runs[0].seconds),
    seconds_default: r1(runs[1].seconds),
    engine_worker_peak_rss_mb: r1(Math.max(runs[0].workerPeak, runs[1].workerPeak)),
    tree_peak_rss_mb_engine_1: r1(runs[0].treePeak),
    tree_peak_rss_mb_default: r1(runs[1].treePeak),
  };
}

export interface TwoDriversFigure {
  subjects: number;
  duplicate_runs: number;
  /** Subjects with no completion marker (should be none: one of the two drivers ran each). */
  subjects_without_marker: number;
  drivers: Array<{ exit: number | null; succeeded: number; held: number; skipped: number; other: number }>;
}

export async function twoDriversFigure(sandbox: DriverSandbox, log: Log, count = 20): Promise<TwoDriversFigure> {
  const subjects = subjectsNamed("sub-two-", count);
  await sandbox.seed(subjects);
  const config = sandbox.writeConfig("two-drivers.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: COPY_INPUT }));
  const args = ["--config", config, "--subjects-file", subjectsFile(sandbox, "two-drivers", subjects), "--concurrency", "4", "--json"];
  const results = await Promise.all([sandbox.run(args), sandbox.run(args)]);
  const markers = await markersBySubject(sandbox);
  const drivers = results.map((res) => {
    if (res.stdout.trim() === "") throw new Error(`a driver of the two printed no result (exit ${res.code}):\n${res.stderr.slice(-3000)}`);
    const entries = batchResultOf(res.stdout).entries;
    const count = (outcome: string) => entries.filter((e) => e.outcome === outcome).length;
    return { exit: res.code, succeeded: count("succeeded"), held: count("held"), skipped: count("skipped"), other: entries.length - count("succeeded") - count("held") - count("skipped") };
  });
  const figure = {
    subjects: count,
    duplicate_runs: subjects.reduce((sum, s) => sum + Math.max(0, (markers.get(s)?.length ?? 0) - 1), 0),
    subjects_without_marker: subjects.filter((s) => !markers.has(s)).length,
    drivers,
  };
  log(`two drivers: ${JSON.stringify(figure)}`);
  return figure;
}

export interface RestartFigure {
  subjects: number;
  killed_with_running: number;
  restart_extra_runs: number;
  /** Subjects whose markers are not exactly one success. */
  subjects_not_one_success: number;
  stacks_holding_resources: number;
  restart_exit: number | null;
  seconds: number;
}

export async function restartFigure(sandbox: DriverSandbox, log: Log, count = 6): Promise<RestartFigure> {
  const subjects = subjectsNamed("sub-restart-", count);
  await sandbox.seed(subjects);
  const config = sandbox.writeConfig("restart.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'sleep 15; cp "$1" "$2/"', "sh", "{input}", "{output}"] }));
  const args = ["--config", config, "--subjects-file", subjectsFile(sandbox, "restart", subjects), "--concurrency", "3"];
  const ours = () => sandbox.records().filter((r: JobRecord) => subjects.includes(r.subject));
  const started = Date.now();
  let pid = 0;
  const first = sandbox.run(args, { onSpawn: (child) => (pid = child.pid!) });
  const deadline = Date.now() + 300_000;
  while (ours().filter((r) => r.state === "running").length < 2) {
    if (Date.now() > deadline) throw new Error("restart: two jobs never reached running");
    await new Promise((r) => setTimeout(r, 100));
  }
  const running = ours().filter((r) => r.state === "running").length;
  process.kill(pid, "SIGKILL");
  await first;
  log(`restart: batch killed (SIGKILL) with ${running} jobs running; starting it again`);
  const again = await sandbox.run([...args, "--json"]);
  const markers = await markersBySubject(sandbox);
  const records = ours();
  const figure = {
    subjects: count,
    killed_with_running: running,
    restart_extra_runs: records.length - count,
    subjects_not_one_success: subjects.filter((s) => JSON.stringify(markers.get(s)) !== JSON.stringify(["succeeded"])).length,
    stacks_holding_resources: records.filter((r) => sandbox.stackResources(r.jobId) > 0).length,
    restart_exit: again.code,
    seconds: r1((Date.now() - started) / 1000),
  };
  log(`restart: ${JSON.stringify(figure)}`);
  return figure;
}
