/**
 * `npm run bench -- scale`, figure 1: the batch process's memory with N jobs in flight. The engine phases and the
 * compute are stood in for (1,000 real `pulumi up`s take about an hour on 2 cores): bench/scale-driver.ts runs the
 * real `runBatch` in its own process, launching onto sandbox/stand-in-compute.ts, which writes each job's heartbeats
 * and, after `runSeconds`, its success marker to moto. The driver's process tree is sampled every second.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as readline from "node:readline";
import { localJobConfig, REPO_ROOT, type DriverSandbox } from "../sandbox/driver-sandbox";
import type { ScaleDriverResult } from "./scale-driver";
import { TreeSampler } from "./scale-rss";

export interface MemoryFigure {
  stand_in: string;
  jobs_in_flight: number;
  jobs_succeeded: number;
  /** The batch process's tree: before launching (jobs resolved), its peak over the batch, its peak with all jobs in flight. */
  baseline_rss_mb: number;
  scheduler_rss_mb: number;
  scheduler_rss_all_in_flight_mb: number;
  rss_mb_per_job_in_flight: number;
  run_seconds: number;
  resolve_s: number;
  all_in_flight_s?: number;
  first_done_s?: number;
  batch_s: number;
  stand_in_writes: { status: number; markers: number; errors: number; max_queued: number; last_error?: string };
  /** Problems that make the figure wrong (not all succeeded, not all in flight at once). */
  failures: string[];
}

const r1 = (value: number) => Math.round(value * 10) / 10;

/** Bundle bench/scale-driver.ts (packages external, as the CLI's own bundle, found through NODE_PATH): plain node runs it, no tsx in the tree. */
async function bundleDriver(outdir: string): Promise<string> {
  const outfile = path.join(outdir, "scale-driver.js");
  const esbuild = require("esbuild") as typeof import("esbuild");
  await esbuild.build({ entryPoints: [path.join(REPO_ROOT, "bench", "scale-driver.ts")], outfile, bundle: true, packages: "external", platform: "node", target: "node20", format: "cjs", logLevel: "warning", absWorkingDir: REPO_ROOT });
  return outfile;
}

function lines(child: ChildProcess, onLine: (line: string) => void): void {
  readline.createInterface({ input: child.stdout! }).on("line", onLine);
}

export async function memoryFigure(sandbox: DriverSandbox, options: { jobs: number; runSeconds: number; log: (line: string) => void }): Promise<MemoryFigure> {
  const { jobs, runSeconds, log } = options;
  const subjects = Array.from({ length: jobs }, (_, i) => `NDARINVS${String(i).padStart(7, "0")}`);
  // Heartbeats every 30 s; a job is looked at every jobs/20 s (the batch's pace), so the timeout leaves room for both.
  const config = sandbox.writeConfig("scale.yaml", { ...localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }), "cloudcompute:heartbeatTimeoutSeconds": "600" });
  const env = { ...process.env, ...sandbox.env };
  delete env.PULUMI_BACKEND_URL;

  const standIn = spawn(process.execPath, ["-r", require.resolve("tsx/cjs"), path.join(REPO_ROOT, "sandbox", "stand-in-compute.ts")], {
    env: { ...env, STAND_IN_RUN_SECONDS: String(runSeconds), STAND_IN_HEARTBEAT_SECONDS: "30" },
    stdio: ["pipe", "pipe", "inherit"],
  });
  let driver: ChildProcess | undefined;
  let sampler: TreeSampler | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      lines(standIn, (line) => resolve((JSON.parse(line) as { port: number }).port));
      standIn.once("exit", (code) => reject(new Error(`the stand-in compute exited (${code})`)));
    });
    const standInUrl = `http://127.0.0.1:${port}`;
    const bundle = await bundleDriver(sandbox.home);
    log(`memory: ${jobs} jobs, stand-in compute pid ${standIn.pid} (${runSeconds} s a job), driver bundle ${bundle}`);
    const input = { config, subjects, standInUrl, standInPid: standIn.pid!, concurrency: jobs, engineConcurrency: 2 };
    driver = spawn(process.execPath, [bundle], { cwd: sandbox.home, env: { ...env, NODE_PATH: path.join(REPO_ROOT, "node_modules"), SCALE_DRIVER: JSON.stringify(input) }, stdio: ["pipe", "pipe", "inherit"] });
    const running = driver;
    const tree = new TreeSampler(running.pid!);
    sampler = tree;
    const result = await new Promise<ScaleDriverResult>((resolve, reject) => {
      lines(running, (line) => {
        let message: { phase?: string };
        try {
          message = JSON.parse(line);
        } catch {
          return log(`driver: ${line}`);
        }
        if (message.phase === "resolved") {
          log(`memory: ${jobs} jobs resolved; baseline for 3 s`);
          setTimeout(() => {
            tree.mark("launch");
            running.stdin!.write("go\n");
          }, 3000);
        } else if (message.phase === "all-in-flight" || message.phase === "first-done") {
          tree.mark(message.phase);
          log(`memory: ${message.phase} (tree ${r1(tree.peak("treeMb"))} MB at most so far)`);
        } else if (message.phase === "result") resolve(message as ScaleDriverResult);
      });
      running.once("exit", (code) => reject(new Error(`the scale driver exited (${code}) without a result`)));
    });
    tree.stop();
    const stats = (await (await fetch(`${standInUrl}/stats`)).json()) as { statusWrites: number; markers: number; writeErrors: number; maxQueued: number; lastError?: string };
    const baseline = tree.peak("treeMb", undefined, "launch");
    const peak = tree.peak("treeMb", "launch");
    const failures: string[] = [];
    if (result.succeeded !== jobs) failures.push(`${result.succeeded} of ${jobs} jobs succeeded (${JSON.stringify(result.outcomes)})`);
    if (result.maxInFlight !== jobs) failures.push(`at most ${result.maxInFlight} of ${jobs} jobs were in flight at once (raise the stand-in's run seconds)`);
    return {
      stand_in: `engine phases and compute stood in for: launch hands the job to a stand-in process that writes heartbeats and, after ${runSeconds} s, the success marker to moto; finish builds the result without an engine; leases, paced waits and events are the batch's own`,
      jobs_in_flight: result.maxInFlight,
      jobs_succeeded: result.succeeded,
      baseline_rss_mb: r1(baseline),
      scheduler_rss_mb: r1(peak),
      scheduler_rss_all_in_flight_mb: r1(tree.peak("treeMb", "all-in-flight", "first-done")),
      rss_mb_per_job_in_flight: Math.round(((peak - baseline) / jobs) * 1000) / 1000,
      run_seconds: runSeconds,
      resolve_s: r1(result.resolveSeconds),
      all_in_flight_s: result.allInFlightSeconds === undefined ? undefined : r1(result.allInFlightSeconds),
      first_done_s: result.firstDoneSeconds === undefined ? undefined : r1(result.firstDoneSeconds),
      batch_s: r1(result.batchSeconds),
      stand_in_writes: { status: stats.statusWrites, markers: stats.markers, errors: stats.writeErrors, max_queued: stats.maxQueued, last_error: stats.lastError },
      failures,
    };
  } finally {
    sampler?.stop();
    if (driver && driver.exitCode === null) driver.kill("SIGKILL");
    standIn.stdin?.end();
    if (standIn.exitCode === null) standIn.kill("SIGTERM");
    fs.rmSync(path.join(sandbox.home, "scale-driver.js"), { force: true });
  }
}
