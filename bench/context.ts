/** What every benchmark case gets from bench/run.ts, and the shape of what it reports. */
import type { S3Server } from "./s3-server";

export interface BenchContext {
  /** The running S3 server; its env is also in process.env, so clients made from the environment reach it. */
  server: S3Server;
  /** A bucket on that server, created for this run. */
  bucket: string;
  /** Where generated data is cached between runs (`<cache>/bench/v<N>/`). */
  cacheDir: string;
  /** A scratch directory removed after the run. */
  scratchDir: string;
  /** Repetitions per measurement; each case reports medians. */
  rounds: number;
  /** Progress lines (stderr). */
  log: (line: string) => void;
}

export interface CaseResult {
  case: string;
  /** Our wall time in seconds (median of rounds). */
  ours_s: number;
  /** The peer's wall time in seconds (median of rounds). */
  peer_s: number;
  /** peer_s / ours_s: above 1 means we are faster. */
  ratio: number;
  /** Pipeline limit / ours_s, where the case defines a limit: 1 means no time is lost beyond the slowest stage. */
  limit_ratio?: number;
  /** The goal in words and whether this run met it. */
  goal: string;
  met: boolean;
  /** What the peer is. */
  peer: string;
  /** Per-stage medians and anything else that explains the numbers. */
  details: Record<string, unknown>;
}
