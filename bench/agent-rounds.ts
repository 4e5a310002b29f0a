/**
 * How the agent benchmarks measure: the AWS CLI peer, wall and CPU seconds of in-process work, and rounds of steps run
 * back to back in a rotating order, reduced to medians.
 */
import { mkdirSync, rmSync } from "node:fs";
import type { BenchContext } from "./context";
import { medians, ownCpuSeconds, processCpuSeconds, r2, runMeasured, settleDisk, timed } from "./util";

/** The seed scripts' AWS CLI: Debian's v2 (an older v1 from pyenv may come first on PATH). It ignores AWS_ENDPOINT_URL. */
export const AWS_CLI = "/usr/bin/aws";
export const STEP_TIMEOUT_MS = 5 * 60_000;

function cliEnv(ctx: BenchContext): NodeJS.ProcessEnv {
  // No user configuration: the peer runs with the CLI's defaults, as on a fresh instance.
  return { ...process.env, ...ctx.server.env, AWS_CONFIG_FILE: "/nonexistent", AWS_SHARED_CREDENTIALS_FILE: "/nonexistent", AWS_PAGER: "" };
}

export function aws(ctx: BenchContext, args: string[]) {
  return runMeasured(AWS_CLI, ["--endpoint-url", ctx.server.endpoint, ...args], {
    env: cliEnv(ctx),
    timeoutMs: STEP_TIMEOUT_MS,
    scratch: ctx.scratchDir,
  });
}

/** Wall and CPU seconds of in-process work, plus the S3 server's CPU seconds meanwhile (where readable). */
export async function measured<T>(ctx: BenchContext, work: () => Promise<T>): Promise<{ value: T; seconds: number; cpu: number; serverCpu?: number }> {
  const cpu0 = ownCpuSeconds();
  const server0 = processCpuSeconds(ctx.server.pid);
  const { value, seconds } = await timed(work);
  const server1 = processCpuSeconds(ctx.server.pid);
  return { value, seconds, cpu: ownCpuSeconds() - cpu0, serverCpu: server0 !== undefined && server1 !== undefined ? server1 - server0 : undefined };
}

export function fresh(dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

export type Steps = Record<string, (round: number) => Promise<Record<string, number>>>;

/**
 * Run every step once per round, back to back, with dirty pages flushed before each, in an order rotated between
 * rounds; return the median of every number the steps report.
 */
export async function runRounds(ctx: BenchContext, label: string, steps: Steps): Promise<Record<string, number>> {
  const rounds: Array<Record<string, number>> = [];
  for (let round = 0; round < ctx.rounds; round++) {
    const results: Record<string, number> = {};
    for (const step of rotate(Object.keys(steps), round)) {
      await settleDisk();
      Object.assign(results, await steps[step](round));
    }
    ctx.log(`${label} round ${round + 1}/${ctx.rounds}: ${JSON.stringify(mapValues(results, r2))}`);
    rounds.push(results);
  }
  return medians(rounds);
}

function mapValues(values: Record<string, number>, fn: (v: number) => number): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, fn(v)]));
}
