/**
 * Listing and start-up benchmark (issue 10 item 5): `npm run bench -- list [--json] [--jobs 10000] [--rounds 3]`.
 *
 * Writes --jobs job records (the driver's own writeJobRecord) into a scratch CLOUDCOMPUTE_HOME, starts moto for the
 * S3 reads `status` makes, then times real processes (`node bin/cloudcompute.js ...`; medians of --rounds, default 5,
 * of wall time and of the process's own CPU time): `list` (all jobs), `list` with filters, `--help` and `status <job>`,
 * each from the prebuilt CLI (dist/cli.js, built first if stale) and, as the peer in the same run and alternating with
 * it, from the TypeScript sources through tsx.
 * Its list_jobs and list_s are also `npm run bench -- scale`'s (bench/scale.ts runs it as a child).
 * Goals: list <= 2 s, --help and status <= 0.5 s. Checks, not timings, can fail it: every listed job must be there.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { JobRecord, JobState, writeJobRecord } from "../driver/jobindex";
import { startMoto } from "../sandbox/moto";
import { PACKAGE_ROOT } from "../common/paths";
import { machineInfo, median } from "./util";

const CLI = path.join(PACKAGE_ROOT, "bin", "cloudcompute.js");
const BUNDLE = path.join(PACKAGE_ROOT, "dist", "cli.js");
const GOALS = { list_s: 2, help_s: 0.5, status_s: 0.5 };
const STATES: JobState[] = ["succeeded", "succeeded", "succeeded", "failed", "error", "interrupted"];
const r3 = (value: number) => Math.round(value * 1000) / 1000;

/** `n` finished jobs over ~n minutes from 2026-01-01, 4 jobs per subject, batches of 1,000: what a study leaves. */
export function generateRecords(n: number, bucket = "cloudcompute-bench"): JobRecord[] {
  const start = Date.parse("2026-01-01T00:00:00Z");
  const records: JobRecord[] = [];
  for (let i = 0; i < n; i++) {
    const subject = `NDARINV${String(i % Math.max(1, Math.ceil(n / 4))).padStart(8, "0")}`;
    const created = new Date(start + i * 60_000);
    const jobId = `job-${subject.toLowerCase()}-${created.toISOString().replace(/[-:]/g, "").slice(0, 15).toLowerCase()}-${String(i).padStart(5, "0")}`;
    const prefix = `s3://${bucket}/out/jobs/${jobId}`;
    records.push({
      jobId,
      subject,
      platform: "local",
      backend: "file:///tmp/state",
      state: STATES[i % STATES.length],
      createdAt: created.toISOString(),
      endedAt: new Date(created.getTime() + 480_000).toISOString(),
      region: "us-east-1",
      markerUrl: `${prefix}/_SUCCESS.json`,
      resultsUrl: `s3://${bucket}/out/${subject}/`,
      statusUrl: `${prefix}/status.json`,
      logUrl: `${prefix}/agent.log`,
      launchId: `launch-${i}`,
      exitCode: 0,
      instanceSeconds: 480,
      costUsd: 0.1,
      attempt: 1,
      timings: { create: 1.2, up: 4.5, wait: 480, destroy: 3.1 },
      batchId: `batch-${String(Math.floor(i / 1000)).padStart(3, "0")}`,
    });
  }
  return records;
}

/**
 * Preloaded into each timed CLI process: at exit it writes its own CPU seconds and peak RSS to a file. CPU time says
 * what a start costs whatever else the machine runs (wall time on a shared 2-core machine swings with its load).
 */
const PROBE = `const fs = require("node:fs");
process.on("exit", () => {
  const u = process.resourceUsage();
  fs.writeFileSync(process.env.CC_BENCH_PROBE_OUT, JSON.stringify({ cpu: (u.userCPUTime + u.systemCPUTime) / 1e6, rssKb: u.maxRSS }));
});`;

interface Timing {
  seconds: number;
  cpu_s: number;
  rss_mb: number;
  stdout: string;
}

/** One CLI run: wall seconds, its own CPU seconds and peak RSS, its stdout; a non-zero exit is an error. */
function runCli(args: string[], env: NodeJS.ProcessEnv, scratch: string): Timing {
  const probeOut = path.join(scratch, "probe.json");
  const started = process.hrtime.bigint();
  const res = spawnSync(process.execPath, ["--require", path.join(scratch, "probe.js"), CLI, ...args], { env: { ...env, CC_BENCH_PROBE_OUT: probeOut }, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (res.status !== 0) throw new Error(`cloudcompute ${args.join(" ")} exited ${res.status}:\n${res.stderr}`);
  const probe = JSON.parse(fs.readFileSync(probeOut, "utf8")) as { cpu: number; rssKb: number };
  return { seconds, cpu_s: probe.cpu, rss_mb: probe.rssKb / 1024, stdout: res.stdout };
}

/** Medians over `rounds`, ours and the peer alternating so that the machine's load drifts over both alike. */
function timePair(args: string[], env: NodeJS.ProcessEnv, peerEnv: NodeJS.ProcessEnv | undefined, rounds: number, scratch: string) {
  const ours: Timing[] = [];
  const peer: Timing[] = [];
  for (let i = 0; i < rounds; i++) {
    ours.push(runCli(args, env, scratch));
    if (peerEnv) peer.push(runCli(args, peerEnv, scratch));
  }
  const summary = (runs: Timing[]) => ({ seconds: r3(median(runs.map((r) => r.seconds))), cpu_s: r3(median(runs.map((r) => r.cpu_s))), rss_mb: Math.round(median(runs.map((r) => r.rss_mb))) });
  return { ...summary(ours), stdout: ours[ours.length - 1].stdout, peer: peerEnv ? summary(peer) : undefined };
}

export async function listBench(argv: string[]): Promise<number> {
  const opt = (name: string, fallback: number) => (argv.includes(`--${name}`) ? Number(argv[argv.indexOf(`--${name}`) + 1]) : fallback);
  const json = argv.includes("--json");
  const jobs = opt("jobs", 10_000);
  const rounds = opt("rounds", 5);
  const log = (line: string) => process.stderr.write(`bench/list: ${line}\n`);

  const { bundleState } = require("../bin/cli-bundle.js") as { bundleState(bundle: string, root: string): { fresh: boolean; why?: string } };
  const state = bundleState(BUNDLE, PACKAGE_ROOT);
  if (!state.fresh) {
    log(`building dist/cli.js (${state.why})`);
    await (require("../scripts/build-cli.js") as { buildCli(): Promise<unknown> }).buildCli();
  }
  const home = fs.mkdtempSync(path.join(process.env.BENCH_TMPDIR ?? os.tmpdir(), "cc-bench-list-"));
  const moto = await startMoto();
  try {
    const previousHome = process.env.CLOUDCOMPUTE_HOME;
    process.env.CLOUDCOMPUTE_HOME = home;
    const records = generateRecords(jobs);
    try {
      for (const record of records) writeJobRecord(record);
    } finally {
      if (previousHome === undefined) delete process.env.CLOUDCOMPUTE_HOME;
      else process.env.CLOUDCOMPUTE_HOME = previousHome;
    }
    log(`${jobs} job records in ${home}/jobs; moto at ${moto.endpoint}`);
    const env = { ...process.env, ...moto.env, CLOUDCOMPUTE_HOME: home };
    const tsxEnv = { ...env, CLOUDCOMPUTE_CLI_BUNDLE: "off" };
    const probe = records[Math.floor(records.length / 2)];
    const filter = ["--batch", probe.batchId!, "--outcome", "failed"];
    const expectedFiltered = records.filter((r) => r.batchId === probe.batchId && r.state === "failed").length;

    fs.writeFileSync(path.join(home, "probe.js"), PROBE);
    runCli(["list"], env, home); // the first list after the records were written builds the compact index: not timed
    const list = timePair(["list", "--json"], env, tsxEnv, rounds, home);
    const listed = (JSON.parse(list.stdout) as JobRecord[]).length;
    if (listed !== jobs) throw new Error(`list --json showed ${listed} jobs, ${jobs} are recorded`);
    const table = timePair(["list"], env, undefined, rounds, home);
    const filtered = timePair(["list", "--json", ...filter], env, undefined, rounds, home);
    if ((JSON.parse(filtered.stdout) as JobRecord[]).length !== expectedFiltered) throw new Error(`list ${filter.join(" ")} did not show the ${expectedFiltered} matching jobs`);
    const help = timePair(["--help"], env, tsxEnv, rounds, home);
    const status = timePair(["status", probe.jobId, "--json"], env, tsxEnv, rounds, home);
    if ((JSON.parse(status.stdout) as { record: JobRecord }).record.jobId !== probe.jobId) throw new Error("status showed another job");
    const [tsxList, tsxHelp, tsxStatus] = [list.peer!, help.peer!, status.peer!];

    const ratio = (ours: number, peer: number) => r3(peer / ours);
    const report = {
      bench: "list",
      date: new Date().toISOString(),
      machine: machineInfo(),
      rounds,
      list_jobs: jobs,
      list_s: list.seconds,
      list_table_s: table.seconds,
      list_filtered_s: filtered.seconds,
      list_filtered_jobs: expectedFiltered,
      help_s: help.seconds,
      status_s: status.seconds,
      cpu_s: { list: list.cpu_s, help: help.cpu_s, status: status.cpu_s },
      rss_mb: { list: list.rss_mb, help: help.rss_mb, status: status.rss_mb },
      goals: GOALS,
      met: { list_s: list.seconds <= GOALS.list_s, help_s: help.seconds <= GOALS.help_s, status_s: status.seconds <= GOALS.status_s },
      peer_tsx: {
        list_s: tsxList.seconds,
        help_s: tsxHelp.seconds,
        status_s: tsxStatus.seconds,
        cpu_s: { list: tsxList.cpu_s, help: tsxHelp.cpu_s, status: tsxStatus.cpu_s },
        rss_mb: { list: tsxList.rss_mb, help: tsxHelp.rss_mb, status: tsxStatus.rss_mb },
      },
      speedup_vs_tsx: { list: ratio(list.seconds, tsxList.seconds), help: ratio(help.seconds, tsxHelp.seconds), status: ratio(status.seconds, tsxStatus.seconds) },
      cpu_ratio_vs_tsx: { list: ratio(list.cpu_s, tsxList.cpu_s), help: ratio(help.cpu_s, tsxHelp.cpu_s), status: ratio(status.cpu_s, tsxStatus.cpu_s) },
    };
    if (json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    else {
      const out = (line: string) => process.stdout.write(line + "\n");
      out(`cloudcompute list/start-up benchmark, ${report.date}; ${report.machine.cores} cores, load ${report.machine.load_avg_1m}; median of ${rounds}`);
      out(`${"measure".padEnd(34)}${"prebuilt s".padStart(11)}${"tsx s".padStart(9)}${"ratio".padStart(8)}${"cpu s".padStart(8)}${"tsx cpu".padStart(9)}  goal`);
      type Row = { seconds: number; cpu_s: number; peer?: { seconds: number; cpu_s: number } };
      const row = (name: string, ours: Row, goal: number) =>
        out(
          `${name.padEnd(34)}${ours.seconds.toFixed(3).padStart(11)}${(ours.peer?.seconds.toFixed(3) ?? "-").padStart(9)}${(ours.peer ? ratio(ours.seconds, ours.peer.seconds).toFixed(2) : "-").padStart(8)}` +
            `${ours.cpu_s.toFixed(3).padStart(8)}${(ours.peer?.cpu_s.toFixed(3) ?? "-").padStart(9)}  <= ${goal} s: ${ours.seconds <= goal ? "met" : "NOT met"}`,
        );
      row(`list --json (${jobs} jobs)`, list, GOALS.list_s);
      row(`list, table (${jobs} jobs)`, table, GOALS.list_s);
      row(`list --batch --outcome (${expectedFiltered})`, filtered, GOALS.list_s);
      row("--help", help, GOALS.help_s);
      row("status <job> (2 S3 reads, moto)", status, GOALS.status_s);
    }
    return 0;
  } finally {
    await moto.stop();
    fs.rmSync(home, { recursive: true, force: true });
  }
}

if (require.main === module) {
  listBench(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench/list failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
