/** Small helpers shared by the benchmark cases: timing, child processes with a deadline, S3 clients, machine facts. */
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { spawn, SpawnOptions } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { performance } from "node:perf_hooks";

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export function mib(bytes: number): number {
  return bytes / MiB;
}

export async function timed<T>(work: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const start = performance.now();
  const value = await work();
  return { value, seconds: (performance.now() - start) / 1000 };
}

/** Round to 2 decimals, the precision the report shows. */
export function r2(value: number): number {
  return Math.round(value * 100) / 100;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Medians of each field over rounds of measurements. */
export function medians<K extends string>(rounds: Array<Record<K, number>>): Record<K, number> {
  const keys = Object.keys(rounds[0]) as K[];
  return Object.fromEntries(keys.map((k) => [k, r2(median(rounds.map((r) => r[k])))])) as Record<K, number>;
}

/**
 * Flush dirty pages before a timed step, so one step's writes (an extracted archive) are not written back on the
 * next step's time.
 */
export async function settleDisk(): Promise<void> {
  await run("sync", [], { timeoutMs: 120_000 });
}

/** CPU seconds (user + system) a process has used so far, from /proc; undefined where that is not readable. */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100 Hz)
  } catch {
    return undefined;
  }
}

/** This process's CPU seconds so far. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

const TIME_PROGRAM = "/usr/bin/time";

/**
 * Run a peer program and measure its wall time and, when GNU time is installed, the CPU seconds it and its children
 * used.
 */
export async function runMeasured(
  command: string,
  args: string[],
  options: SpawnOptions & { timeoutMs: number; scratch: string },
): Promise<{ seconds: number; cpuSeconds?: number }> {
  if (!existsSync(TIME_PROGRAM)) return { seconds: (await timed(() => run(command, args, options))).seconds };
  const report = `${options.scratch}/time-${process.pid}-${Date.now()}.txt`;
  const { seconds } = await timed(() => run(TIME_PROGRAM, ["-f", "%U %S", "-o", report, command, ...args], options));
  const [user, system] = readFileSync(report, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  rmSync(report, { force: true });
  return { seconds, cpuSeconds: user + system };
}

/**
 * Run a program to completion; reject with its stderr tail on a non-zero exit or when `timeoutMs` passes (the child
 * and its process group are killed then, so a stuck peer cannot outlive the benchmark).
 */
export function run(command: string, args: string[], options: SpawnOptions & { timeoutMs: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk) => (stdout = (stdout + chunk.toString()).slice(-20_000)));
    child.stderr?.on("data", (chunk) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
      reject(new Error(`${command} ${args.join(" ")} timed out after ${options.timeoutMs / 1000} s`));
    }, options.timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.join(" ")} failed (${signal ?? `exit ${code}`}):\n${stderr}`));
    });
  });
}

/** An S3 client for the benchmark's own setup and checks (not the code under test): checksums only when required. */
export function benchClient(env: Record<string, string>): S3Client {
  return new S3Client({
    endpoint: env.AWS_ENDPOINT_URL,
    region: env.AWS_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

export async function createBucket(env: Record<string, string>, bucket: string): Promise<void> {
  const client = benchClient(env);
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

export interface MachineInfo {
  cores: number;
  cpu_model: string;
  memory_gib: number;
  node: string;
  platform: string;
  /** 1-minute load average when the run started: other work on the machine skews every number. */
  load_avg_1m: number;
}

export function machineInfo(): MachineInfo {
  const cpuList = cpus();
  return {
    cores: cpuList.length,
    cpu_model: cpuList[0]?.model ?? "unknown",
    memory_gib: Math.round(totalmem() / GiB),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    load_avg_1m: r2(loadavg()[0]),
  };
}
