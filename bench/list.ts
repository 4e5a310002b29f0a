/**
 * Listing and start-up benchmark (issue 10 item 5): `npm run bench -- list [--json] [--jobs 10000] [--rounds 3]`.
 *
 * Writes --jobs job records (the driver's own writeJobRecord) into a scratch CLOUDCOMPUTE_HOME, starts moto for the
 * S3 reads `status` makes, then times real processes (`node bin/cloudcompute.js ...`, wall clock, median of
 * --rounds): `list` (all jobs), `list` with filters, `--help` and `status <job>`, each from the prebuilt CLI
 * (dist/cli.js, built first if stale) and, as the peer in the same run, from the TypeScript sources through tsx.
 * The fields list_jobs and list_s are the ones the issue's `scale` benchmark reports: fold this in there later.
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

/** Wall seconds of one CLI run (median of `rounds`), and its last stdout; a non-zero exit is an error. */
function timeCli(args: string[], env: NodeJS.ProcessEnv, rounds: number): { seconds: number; stdout: string; stderr: string } {
  const times: number[] = [];
  let last = { stdout: "", stderr: "" };
  for (let i = 0; i < rounds; i++) {
    const started = process.hrtime.bigint();
    const res = spawnSync(process.execPath, [CLI, ...args], { env, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
    times.push(Number(process.hrtime.bigint() - started) / 1e9);
    if (res.status !== 0) throw new Error(`cloudcompute ${args.join(" ")} exited ${res.status}:\n${res.stderr}`);
    last = { stdout: res.stdout, stderr: res.stderr };
  }
  return { seconds: r3(median(times)), stdout: last.stdout, stderr: last.stderr };
}

export async function listBench(argv: string[]): Promise<number> {
  const opt = (name: string, fallback: number) => (argv.includes(`--${name}`) ? Number(argv[argv.indexOf(`--${name}`) + 1]) : fallback);
  const json = argv.includes("--json");
  const jobs = opt("jobs", 10_000);
  const rounds = opt("rounds", 3);
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

    const list = timeCli(["list", "--json"], env, rounds);
    const listed = (JSON.parse(list.stdout) as JobRecord[]).length;
    if (listed !== jobs) throw new Error(`list --json showed ${listed} jobs, ${jobs} are recorded`);
    const table = timeCli(["list"], env, rounds);
    const filtered = timeCli(["list", "--json", ...filter], env, rounds);
    if ((JSON.parse(filtered.stdout) as JobRecord[]).length !== expectedFiltered) throw new Error(`list ${filter.join(" ")} did not show the ${expectedFiltered} matching jobs`);
    const help = timeCli(["--help"], env, rounds);
    const status = timeCli(["status", probe.jobId, "--json"], env, rounds);
    if ((JSON.parse(status.stdout) as { record: JobRecord }).record.jobId !== probe.jobId) throw new Error("status showed another job");
    log("the same from the TypeScript sources (tsx), the peer");
    const tsxList = timeCli(["list", "--json"], tsxEnv, rounds);
    const tsxHelp = timeCli(["--help"], tsxEnv, rounds);
    const tsxStatus = timeCli(["status", probe.jobId, "--json"], tsxEnv, rounds);

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
      goals: GOALS,
      met: { list_s: list.seconds <= GOALS.list_s, help_s: help.seconds <= GOALS.help_s, status_s: status.seconds <= GOALS.status_s },
      peer_tsx: { list_s: tsxList.seconds, help_s: tsxHelp.seconds, status_s: tsxStatus.seconds },
      speedup_vs_tsx: { list: ratio(list.seconds, tsxList.seconds), help: ratio(help.seconds, tsxHelp.seconds), status: ratio(status.seconds, tsxStatus.seconds) },
    };
    if (json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    else {
      const out = (line: string) => process.stdout.write(line + "\n");
      out(`cloudcompute list/start-up benchmark, ${report.date}; ${report.machine.cores} cores, load ${report.machine.load_avg_1m}; median of ${rounds}`);
      out(`${"measure".padEnd(34)}${"prebuilt s".padStart(11)}${"tsx s".padStart(9)}${"ratio".padStart(8)}  goal`);
      const row = (name: string, ours: number, peer: number | undefined, goal: number | undefined) =>
        out(`${name.padEnd(34)}${ours.toFixed(3).padStart(11)}${(peer?.toFixed(3) ?? "-").padStart(9)}${(peer ? ratio(ours, peer).toFixed(2) : "-").padStart(8)}  ${goal ? `<= ${goal} s: ${ours <= goal ? "met" : "NOT met"}` : ""}`);
      row(`list --json (${jobs} jobs)`, list.seconds, tsxList.seconds, GOALS.list_s);
      row(`list, table (${jobs} jobs)`, table.seconds, undefined, GOALS.list_s);
      row(`list --batch --outcome (${expectedFiltered})`, filtered.seconds, undefined, GOALS.list_s);
      row("--help", help.seconds, tsxHelp.seconds, GOALS.help_s);
      row("status <job> (2 S3 reads, moto)", status.seconds, tsxStatus.seconds, GOALS.status_s);
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
