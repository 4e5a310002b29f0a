/**
 * `npm run bench -- list [--json] [--jobs N]`: the listing and start-up benchmark (bench/list.ts) alone.
 * `npm run bench -- scale [--json] [--jobs 1000] [--run-seconds 120]`: issue 10's scale figures (bench/scale.ts) alone.
 * `npm run bench -- [--json] [--only agent|driver] [--cases download,upload,overlap] [--rounds N] [--check]
 *                  [--server auto|versitygw|moto]`
 *
 * Starts one local S3 server (versitygw, built once by scripts/s3-server.sh; moto if that is impossible), measures its
 * raw throughput for context, then runs the agent cases (bench/agent.ts) against it, then, when bench/driver.ts
 * exists, the driver benchmark in a child process (it brings its own moto sandbox). Prints a table, or with --json one JSON document on stdout
 * (progress goes to stderr). Everything it starts is stopped, and its scratch directory removed, on the way out.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { AGENT_CASES, agentCases, type AgentCase } from "./agent";
import type { BenchContext, CaseResult } from "./context";
import { CACHE_DIR, startS3Server, type S3Server } from "./s3-server";
import { measureServerThroughput, type ServerThroughput } from "./throughput";
import { createBucket, machineInfo, type MachineInfo } from "./util";
import { silenceAwsSdkNodeNotice } from "../job/node-support";

interface Report {
  date: string;
  machine: MachineInfo;
  s3_server: { name: string; throughput: ServerThroughput };
  cases: CaseResult[];
  /** bench/driver.ts's own report (it runs in a child process: its own sandbox, and one Pulumi engine per process). */
  driver?: unknown;
  /** Suites that failed; the others' results are still reported. */
  errors: string[];
  /** Seconds the whole run took. */
  total_s: number;
}

async function main(): Promise<number> {
  silenceAwsSdkNodeNotice();
  // A named benchmark runs alone, with its own arguments.
  if (hideBin(process.argv)[0] === "list") return (await import("./list")).listBench(hideBin(process.argv).slice(1));
  if (hideBin(process.argv)[0] === "scale") return (await import("./scale")).scaleBench(hideBin(process.argv).slice(1));
  const argv = await yargs(hideBin(process.argv))
    .scriptName("npm run bench --")
    .option("json", { type: "boolean", default: false, describe: "print one JSON document on stdout" })
    .option("only", { choices: ["agent", "driver"] as const, describe: "run only the agent or only the driver cases" })
    .option("cases", {
      type: "string",
      describe: `agent cases, comma-separated (${AGENT_CASES.join(",")})`,
      coerce: (value: string) => {
        const list = value.split(",").map((s) => s.trim()).filter(Boolean);
        const unknown = list.filter((c) => !(AGENT_CASES as string[]).includes(c));
        if (unknown.length) throw new Error(`unknown case(s) ${unknown.join(", ")}: choose from ${AGENT_CASES.join(", ")}`);
        return list as AgentCase[];
      },
    })
    .option("rounds", { type: "number", default: 3, describe: "repetitions per measurement (medians are reported)" })
    .option("check", { type: "boolean", default: false, describe: "exit 2 when a case misses its goal" })
    .option("server", { choices: ["auto", "versitygw", "moto"] as const, default: "auto" as const, describe: "S3 server" })
    .check((args) => {
      if (!Number.isInteger(args.rounds) || args.rounds < 1 || args.rounds > 9) throw new Error("--rounds must be an integer from 1 to 9");
      return true;
    })
    .strict()
    .help()
    .parse();

  const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
  const started = Date.now();
  const scratchDir = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), "cc-bench-"));
  let server: S3Server | undefined;
  let stopping = false;
  const cleanUp = async () => {
    if (stopping) return;
    stopping = true;
    await server?.stop().catch((err) => log(`stopping the S3 server failed: ${(err as Error).message}`));
    rmSync(scratchDir, { recursive: true, force: true });
  };
  // Ctrl-C or a kill: stop the server and remove scratch data; exit handlers (the test registry) then run too.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      log(`${signal}: cleaning up`);
      void cleanUp().finally(() => process.exit(130));
    });
  }

  try {
    const machine = machineInfo();
    server = await startS3Server(argv.server, log);
    log(`S3 server: ${server.name} at ${server.endpoint}`);
    Object.assign(process.env, server.env); // the agent's clients take endpoint and credentials from the environment
    const bucket = "cloudcompute-bench";
    await createBucket(server.env, bucket);
    const throughput = await measureServerThroughput(server.env, bucket);
    log(`server throughput (MiB/s): ${JSON.stringify(throughput)}`);

    const ctx: BenchContext = { server, bucket, cacheDir: CACHE_DIR, scratchDir, rounds: argv.rounds, log };
    const cases: CaseResult[] = [];
    const errors: string[] = [];
    if (argv.only !== "driver") {
      try {
        cases.push(...(await agentCases(ctx, argv.cases ?? AGENT_CASES)));
      } catch (err) {
        errors.push(`agent cases: ${(err as Error).stack ?? String(err)}`);
        log(errors[errors.length - 1]);
      }
    }
    let driver: unknown;
    if (argv.only !== "agent") {
      const driverScript = join(__dirname, "driver.ts");
      if (existsSync(driverScript)) {
        try {
          driver = await runDriverBench(driverScript, argv.json);
        } catch (err) {
          errors.push(`driver cases: ${(err as Error).message}`);
          log(errors[errors.length - 1]);
        }
      } else if (argv.only === "driver") {
        errors.push("bench/driver.ts does not exist yet: no driver cases to run");
      }
    }

    const report: Report = {
      date: new Date().toISOString(),
      machine,
      s3_server: { name: server.name, throughput },
      cases,
      driver,
      errors,
      total_s: Math.round((Date.now() - started) / 1000),
    };
    if (argv.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    else printTable(report);
    if (errors.length > 0) return 1;
    return argv.check && !cases.every((c) => c.met) ? 2 : 0;
  } finally {
    await cleanUp();
  }
}

/**
 * The driver benchmark runs as its own process (`tsx bench/driver.ts`): it starts its own moto sandbox and Pulumi
 * engines, which keep global state per process. With --json its JSON report is embedded; otherwise its text is
 * passed through and undefined returned.
 */
function runDriverBench(script: string, json: boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tsx = join(__dirname, "..", "node_modules", ".bin", "tsx");
    const child = spawn(tsx, [script, ...(json ? ["--json"] : [])], { stdio: ["ignore", json ? "pipe" : "inherit", "inherit"] });
    let stdout = "";
    child.stdout?.on("data", (chunk) => (stdout += chunk.toString()));
    // Stop it with us: a bench interrupted by Ctrl-C must not leave the driver's engines running.
    const stop = () => child.kill("SIGINT");
    process.once("exit", stop);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      process.removeListener("exit", stop);
      if (code !== 0) return reject(new Error(`bench/driver.ts failed (${signal ?? `exit ${code}`})`));
      if (!json) return resolve(undefined);
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`bench/driver.ts printed no JSON report:\n${stdout.slice(-2000)}`));
      }
    });
  });
}

function printTable(report: Report): void {
  const { machine, s3_server: s3 } = report;
  const out = (line = "") => process.stdout.write(line + "\n");
  out(`cloudcompute benchmarks, ${report.date}`);
  out(`machine: ${machine.cores} cores ${machine.cpu_model}, ${machine.memory_gib} GiB, node ${machine.node}, load ${machine.load_avg_1m}`);
  out(`S3 server: ${s3.name}; raw MiB/s put ${s3.throughput.put_mib_s} (4 parallel ${s3.throughput.put_4_objects_mib_s}), get ${s3.throughput.get_mib_s} (4 ranges ${s3.throughput.get_4_ranges_mib_s})`);
  out();
  out(`${"case".padEnd(18)}${"ours s".padStart(9)}${"peer s".padStart(9)}${"ratio".padStart(8)}${"limit".padStart(8)}  goal`);
  for (const c of report.cases) {
    out(
      `${c.case.padEnd(18)}${c.ours_s.toFixed(2).padStart(9)}${c.peer_s.toFixed(2).padStart(9)}${c.ratio.toFixed(2).padStart(8)}` +
        `${(c.limit_ratio?.toFixed(2) ?? "-").padStart(8)}  ${c.met ? "met" : "NOT met"}: ${c.goal}`,
    );
    out(`${"".padEnd(18)}peer: ${c.peer}`);
    out(`${"".padEnd(18)}${JSON.stringify(c.details)}`);
  }
  for (const error of report.errors) out(`FAILED: ${error}`);
  out();
  out(`total ${report.total_s} s`);
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
