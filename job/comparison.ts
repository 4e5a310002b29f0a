/**
 * A comparison of instance types (`run --compare`): the same subject run on each type, one stack each, measured and
 * priced. Saved as $CLOUDCOMPUTE_HOME/comparisons/<comparisonId>/comparison.json (with comparison.csv and chart.svg
 * beside it); `--instance-type auto` and `--dry-run`'s estimate read the latest one for the same image and command.
 * This file is the record's shape, shared by the code that writes it and the code that reads it.
 */
import { createHash } from "node:crypto";
import type { Price } from "./pricing";

export const COMPARISON_KIND = "cloudcompute-comparison";
export const COMPARISON_VERSION = 1;

/** One instance type's run and what it cost. */
export interface ComparedType {
  instanceType: string;
  jobId: string;
  outcome: string;
  reason?: string;
  /** The job from start to end (driver total), seconds. */
  wallSeconds: number;
  /** The driver's steps (create, up, wait, destroy, total) and the agent's phases (inputs, run, outputs, ...), seconds. */
  phases: { driver: Record<string, number>; agent: Record<string, number> };
  /** The instance's life, and what AWS bills of it (60 s minimum). */
  instanceSeconds?: number;
  billedSeconds?: number;
  /** The prices the costs below used, with their sources and dates; spot when one is known. */
  onDemandPrice?: Price;
  spotPrice?: Price;
  /** One subject at each price (instance and volume). */
  onDemandUsd?: number;
  spotUsd?: number;
  /** The cost per subject as run (spot if the job ran on spot, else on-demand). */
  costPerSubjectUsd?: number;
}

/** `subjects` jobs like the measured one, `concurrency` at a time (fewer when the quotas cap it: `capped` says why). */
export interface BatchExtrapolation {
  costUsd: number;
  wallSeconds: number;
  concurrency?: number;
  capped?: string;
}

export interface Comparison {
  kind: typeof COMPARISON_KIND;
  version: typeof COMPARISON_VERSION;
  comparisonId: string;
  createdAt: string;
  /** comparisonKey(image, command): which later jobs this comparison speaks for. */
  key: string;
  image: string;
  command: string[];
  subject: string;
  platform: string;
  region: string;
  /** Extrapolation: this many subjects, `concurrency` at a time. */
  subjects: number;
  concurrency: number;
  /** The jobs ran on spot (costPerSubjectUsd is then the spot cost). Absent in files written before it existed. */
  spot?: boolean;
  /** What the extrapolation takes for granted (same time and cost per subject, quotas, how wall was measured). */
  assumptions?: string[];
  types: Array<ComparedType & { batch?: BatchExtrapolation }>;
}

/** What a comparison is valid for: the image and the command (the same container doing the same work). */
export function comparisonKey(image: string, command: readonly string[]): string {
  return createHash("sha256").update(JSON.stringify([image, command])).digest("hex").slice(0, 16);
}
