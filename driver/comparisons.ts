/**
 * The saved comparisons of instance types (`run --compare`, shape in job/comparison.ts), read back for
 * `--instance-type auto` and `--dry-run`'s estimate. Files are the user's own but may be hand-edited, half-written,
 * of another version or planted: any that does not hold exactly the shape is passed over, never an error, and what
 * is kept is checked down to the characters later printed on the terminal.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { cloudcomputeHome } from "../common/paths";
import { INSTANCE_TYPE_PATTERN } from "../job/spec";
import { COMPARISON_KIND, COMPARISON_VERSION, comparisonKey, type ComparedType, type Comparison } from "../job/comparison";

/** A comparison of a few dozen types is a few kB; anything far larger is not one (and is not read whole). */
const MAX_FILE_BYTES = 1024 * 1024;
/** Ids and types are printed: plain characters only. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SAFE_TEXT = /^[\x20-\x7e]{1,200}$/;

export function comparisonsDir(): string {
  return path.join(cloudcomputeHome(), "comparisons");
}

const isNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value) && value >= 0;
const optionalNumber = (value: unknown) => value === undefined || isNumber(value);

function validType(value: unknown): value is ComparedType {
  if (typeof value !== "object" || value === null) return false;
  const t = value as Record<string, unknown>;
  return typeof t.instanceType === "string" && INSTANCE_TYPE_PATTERN.test(t.instanceType) && typeof t.outcome === "string" && SAFE_TEXT.test(t.outcome)
    && isNumber(t.wallSeconds) && optionalNumber(t.instanceSeconds) && optionalNumber(t.billedSeconds) && optionalNumber(t.costPerSubjectUsd)
    && optionalNumber(t.onDemandUsd) && optionalNumber(t.spotUsd);
}

/** The comparison `text` holds, or undefined when it is not one of this version (whatever it is instead). */
export function parseComparison(text: string, expectedId?: string): Comparison | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const c = value as Record<string, unknown>;
  if (c.kind !== COMPARISON_KIND || c.version !== COMPARISON_VERSION) return undefined;
  if (typeof c.comparisonId !== "string" || !SAFE_ID.test(c.comparisonId) || (expectedId !== undefined && c.comparisonId !== expectedId)) return undefined;
  if (typeof c.createdAt !== "string" || Number.isNaN(Date.parse(c.createdAt)) || Date.parse(c.createdAt) > Date.now() + FUTURE_SLACK_MS) return undefined;
  if (typeof c.key !== "string" || typeof c.image !== "string" || !Array.isArray(c.command) || !c.command.every((a) => typeof a === "string")) return undefined;
  // A key that is not its own image and command's would speak for another job's work.
  if (c.key !== comparisonKey(c.image, c.command as string[])) return undefined;
  if (typeof c.platform !== "string" || typeof c.region !== "string" || (c.spot !== undefined && typeof c.spot !== "boolean")) return undefined;
  if (!Array.isArray(c.types) || !c.types.every(validType)) return undefined;
  // Printed and compared as ISO: a createdAt written otherwise is normalised, never echoed as given.
  return { ...(value as Comparison), createdAt: new Date(c.createdAt).toISOString() };
}

/**
 * A regular file of sane size that this user owns, read; undefined for anything else (a link, a device or FIFO, a
 * directory, a huge file, another user's file in a shared home). Opened without following links and without
 * blocking, then checked on the open descriptor: nothing can be swapped in between the check and the read.
 */
function readSmallFile(file: string): string | undefined {
  let fd: number | undefined;
  try {
    const dir = fs.lstatSync(path.dirname(file));
    if (!dir.isDirectory()) return undefined;
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    const stat = fs.fstatSync(fd);
    if (!stat.isFile() || stat.size > MAX_FILE_BYTES) return undefined;
    if (typeof process.getuid === "function" && stat.uid !== process.getuid()) return undefined;
    return fs.readFileSync(fd, "utf8");
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** A comparison dated in the future (a clock ahead, or a planted file) would shadow every real one for ever. */
const FUTURE_SLACK_MS = 10 * 60 * 1000;

/** Every readable comparison under $CLOUDCOMPUTE_HOME/comparisons, newest first. */
export function listComparisons(dir = comparisonsDir()): Comparison[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const found: Comparison[] = [];
  for (const name of names) {
    if (!SAFE_ID.test(name)) continue;
    const text = readSmallFile(path.join(dir, name, "comparison.json"));
    const comparison = text === undefined ? undefined : parseComparison(text, name);
    if (comparison) found.push(comparison);
  }
  return found.sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || b.comparisonId.localeCompare(a.comparisonId));
}

/** The comparisons for `key` (comparisonKey(image, command)), newest first, on the same platform and region when given. */
export function comparisonsFor(key: string, where: { platform?: string; region?: string } = {}, dir = comparisonsDir()): Comparison[] {
  return listComparisons(dir).filter((c) => c.key === key && (where.platform === undefined || c.platform === where.platform) && (where.region === undefined || c.region === where.region));
}

/** The newest of them. */
export function latestComparison(key: string, where: { platform?: string; region?: string } = {}, dir = comparisonsDir()): Comparison | undefined {
  return comparisonsFor(key, where, dir)[0];
}
