/**
 * Issue 10's must-show scale benchmark: `npm run bench -- scale [--json] [--jobs 1000] [--run-seconds 120]`.
 *
 * 1. memory with --jobs jobs in flight (engine phases and compute stood in for: bench/scale-memory.ts);
 * 2. launch + teardown throughput with the real engine at --engine-concurrency 1 and the default, and the engine
 *    workers' memory (bench/scale-engine.ts); driver_tree_rss_mb = 1's scheduler peak + default engine concurrency ×
 *    the largest engine worker: computed from two measurements, as the output says;
 * 3. `list` over 10,000 recorded jobs (bench/list.ts, in a child process);
 * 4. two drivers at once on the same 20 subjects: duplicate runs; 5. a batch SIGKILLed and started again: extra runs;
 * 6. quota caps (bench/quotas.ts).
 * Each figure is printed with its goal; with --json one JSON document on stdout (progress on stderr). A check that
 * fails (a job not succeeding, fewer jobs in flight than asked, a duplicate or extra run, a stack left) exits 1.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { startDriverSandbox, type DriverSandbox } from "../sandbox/driver-sandbox";
import { PACKAGE_ROOT } from "../common/paths";
import { memoryFigure, type MemoryFigure } from "./scale-memory";
import { restartFigure, throughputFigure, twoDriversFigure, type RestartFigure, type ThroughputFigure, type TwoDriversFigure } from "./scale-engine";
import { quotaCapsFigure, type QuotaCapsFigure } from "./quotas";
import { machineInfo } from "./util";

export const SCALE_GOALS = { driver_tree_rss_mb: 2048, rss_mb_per_job_in_flight: 2, list_s: 2, duplicate_runs: 0, restart_extra_runs: 0 };

/** bench/list.ts's report, from its own process (it times CLI processes and brings its own moto). */
function listFigure(jobs: number, log: (line: string) => void): Promise<{ list_jobs: number; list_s: number; [key: string]: unknown }> {
  return new Promise((resolve, reject) => {
    const tsx = path.join(PACKAGE_ROOT, "node_modules", ".bin", "tsx");
    const child = spawn(tsx, [path.join(__dirname, "list.ts"), "--json", "--jobs", String(jobs), "--rounds", "3"], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    const stop = () => child.kill("SIGINT");
    process.once("exit", stop);
    child.on("error", reject);
    child.on("exit", (code) => {
      process.removeListener("exit", stop);
      if (code !== 0) return reject(new Error(`bench/list.ts exited ${code}`));
      log(`list: done`);
      resolve(JSON.parse(stdout));
    });
  });
}

async function inSandbox<T>(work: (sandbox: DriverSandbox) => Promise<T>, env: Record<string, string> = {}): Promise<T> {
  const sandbox = await startDriverSandbox(env);
  try {
    return await work(sandbox);
  } finally {
    await sandbox.stop();
  }
}

export async function scaleBench(argv: string[]): Promise<number> {
  const opt = (name: string, fallback: number) => (argv.includes(`--${name}`) ? Number(argv[argv.indexOf(`--${name}`) + 1]) : fallback);
  const json = argv.includes("--json");
  const jobs = opt("jobs", 1000);
  const runSeconds = opt("run-seconds", 120);
  if (!(Number.isInteger(jobs) && jobs > 0) || !(runSeconds > 0)) throw new Error("--jobs must be a positive integer and --run-seconds positive");
  const log = (line: string) => process.stderr.write(`bench/scale: ${line}\n`);
  const started = Date.now();
  const timed = async <T>(name: string, work: () => Promise<T>): Promise<{ value: T; seconds: number }> => {
    const t = Date.now();
    log(`${name}...`);
    const value = await work();
    return { value, seconds: Math.round((Date.now() - t) / 1000) };
  };

  const { bundleState } = require("../bin/cli-bundle.js") as { bundleState(bundle: string, root: string): { fresh: boolean; why?: string } };
  if (!bundleState(path.join(PACKAGE_ROOT, "dist", "cli.js"), PACKAGE_ROOT).fresh) {
    log("building dist/cli.js (the CLI the engine figures run)");
    await (require("../scripts/build-cli.js") as { buildCli(): Promise<unknown> }).buildCli();
  }
  const memory = await timed("memory", () => inSandbox((sandbox) => memoryFigure(sandbox, { jobs, runSeconds, log })));
  const engine = await timed("throughput, two drivers, restart", () =>
    inSandbox(async (sandbox) => ({ throughput: await throughputFigure(sandbox, log), twoDrivers: await twoDriversFigure(sandbox, log), restart: await restartFigure(sandbox, log) }), { CLOUDCOMPUTE_POLL_MS: "300" }),
  );
  const list = await timed("list", () => listFigure(10_000, log));
  const quotas = await timed("quota caps", () => quotaCapsFigure());

  const m: MemoryFigure = memory.value;
  const t: ThroughputFigure = engine.value.throughput;
  const two: TwoDriversFigure = engine.value.twoDrivers;
  const restart: RestartFigure = engine.value.restart;
  const q: QuotaCapsFigure = quotas.value;
  const driverTree = Math.round((m.scheduler_rss_mb + t.engine_concurrency_default * t.engine_worker_peak_rss_mb) * 10) / 10;
  const failures = [
    ...m.failures.map((f) => `memory: ${f}`),
    ...(two.duplicate_runs > 0 ? [`two drivers: ${two.duplicate_runs} duplicate runs`] : []),
    ...(two.subjects_without_marker > 0 ? [`two drivers: ${two.subjects_without_marker} subjects never ran`] : []),
    ...(restart.restart_extra_runs !== 0 ? [`restart: ${restart.restart_extra_runs} extra runs`] : []),
    ...(restart.subjects_not_one_success > 0 ? [`restart: ${restart.subjects_not_one_success} subjects without exactly one success`] : []),
    ...(restart.stacks_holding_resources > 0 ? [`restart: ${restart.stacks_holding_resources} stacks still hold resources`] : []),
    ...(restart.restart_exit !== 0 ? [`restart: the restarted batch exited ${restart.restart_exit}`] : []),
  ];
  const report = {
    bench: "scale",
    date: new Date().toISOString(),
    machine: machineInfo(),
    jobs_in_flight: m.jobs_in_flight,
    driver_tree_rss_mb: driverTree,
    driver_tree_rss_computed: `scheduler_rss_mb (${m.scheduler_rss_mb}, ${m.jobs_in_flight} stand-in jobs in flight) + engine_concurrency_default (${t.engine_concurrency_default}) × engine_worker_peak_rss_mb (${t.engine_worker_peak_rss_mb}, real engine): two measurements combined`,
    scheduler_rss_mb: m.scheduler_rss_mb,
    rss_mb_per_job_in_flight: m.rss_mb_per_job_in_flight,
    engine_concurrency_default: t.engine_concurrency_default,
    engine_worker_peak_rss_mb: t.engine_worker_peak_rss_mb,
    list_jobs: list.value.list_jobs,
    list_s: list.value.list_s,
    jobs_per_min_engine_1: t.jobs_per_min_engine_1,
    jobs_per_min_default: t.jobs_per_min_default,
    duplicate_runs: two.duplicate_runs,
    restart_extra_runs: restart.restart_extra_runs,
    goals: SCALE_GOALS,
    met: {
      driver_tree_rss_mb: driverTree <= SCALE_GOALS.driver_tree_rss_mb,
      rss_mb_per_job_in_flight: m.rss_mb_per_job_in_flight <= SCALE_GOALS.rss_mb_per_job_in_flight,
      list_s: list.value.list_s <= SCALE_GOALS.list_s,
      duplicate_runs: two.duplicate_runs === SCALE_GOALS.duplicate_runs,
      restart_extra_runs: restart.restart_extra_runs === SCALE_GOALS.restart_extra_runs,
    },
    memory: m,
    throughput: t,
    two_drivers: two,
    restart,
    quota_caps: q,
    durations_s: { memory: memory.seconds, engine: engine.seconds, list: list.seconds, quotas: quotas.seconds, total: Math.round((Date.now() - started) / 1000) },
    failures,
  };
  if (json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  else printScale(report);
  return failures.length > 0 ? 1 : 0;
}

function printScale(r: Parameters<typeof JSON.stringify>[0]): void {
  const out = (line = "") => process.stdout.write(line + "\n");
  const met = (ok: boolean) => (ok ? "met" : "NOT met");
  out(`cloudcompute scale benchmark, ${r.date}; ${r.machine.cores} cores, ${r.machine.memory_gib} GiB, load ${r.machine.load_avg_1m}`);
  out(`1. memory, ${r.jobs_in_flight} jobs in flight (${r.memory.stand_in})`);
  out(`   batch process: ${r.memory.baseline_rss_mb} MB before launching, peak ${r.scheduler_rss_mb} MB; per job in flight ${r.rss_mb_per_job_in_flight} MB   goal <= ${SCALE_GOALS.rss_mb_per_job_in_flight} MB: ${met(r.met.rss_mb_per_job_in_flight)}`);
  out(`   driver tree ${r.driver_tree_rss_mb} MB   goal <= ${SCALE_GOALS.driver_tree_rss_mb} MB: ${met(r.met.driver_tree_rss_mb)}`);
  out(`     = ${r.driver_tree_rss_computed}`);
  out(`2. launch + teardown, real engine, ${r.throughput.subjects} jobs at --concurrency ${r.throughput.concurrency}: ${r.jobs_per_min_engine_1} jobs/min at engine concurrency 1, ${r.jobs_per_min_default} at the default ${r.engine_concurrency_default} (×${r.throughput.speedup})`);
  out(`   batch tree peak ${r.throughput.tree_peak_rss_mb_engine_1} MB / ${r.throughput.tree_peak_rss_mb_default} MB; largest engine worker ${r.engine_worker_peak_rss_mb} MB`);
  out(`3. list over ${r.list_jobs} jobs: ${r.list_s} s   goal <= ${SCALE_GOALS.list_s} s: ${met(r.met.list_s)}`);
  out(`4. two drivers at once on ${r.two_drivers.subjects} subjects: ${r.duplicate_runs} duplicate runs   goal 0: ${met(r.met.duplicate_runs)}; drivers ${JSON.stringify(r.two_drivers.drivers)}`);
  out(`5. batch SIGKILLed with ${r.restart.killed_with_running} jobs running, started again: ${r.restart_extra_runs} extra runs   goal 0: ${met(r.met.restart_extra_runs)}; ${r.restart.stacks_holding_resources} stacks holding resources`);
  out(`6. quota caps: ${r.quota_caps.quota_vcpus} vCPUs, ${r.quota_caps.in_use_vcpus} in use, ${r.quota_caps.per_job_vcpus} a job: concurrency ${r.quota_caps.capped_concurrency}`);
  out(`   ${r.quota_caps.capped_message}`);
  out(`   --concurrency 5: exit ${r.quota_caps.refused_exit}: ${r.quota_caps.refused_message}`);
  for (const f of r.failures) out(`FAILED: ${f}`);
  out(`total ${r.durations_s.total} s`);
}
