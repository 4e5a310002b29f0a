/**
 * `run --compare TYPE[=USD_PER_HOUR[/SPOT_USD_PER_HOUR]],...`: the items and the flags that go with them, checked
 * before anything exists (BadInputError, exit 2). Pure: no I/O.
 */
import { INSTANCE_TYPE_PATTERN } from "../job/spec";
import { roundUsd } from "../job/pricing";
import { BadInputError } from "./errors";
import { planConcurrency, type CapacityReport } from "./quotas";

export const MIN_COMPARED_TYPES = 2;
export const MAX_COMPARED_TYPES = 8;
/** No instance costs more: a larger given price is a typo, and one near Number.MAX_VALUE would make costs Infinity. */
export const MAX_GIVEN_USD_PER_HOUR = 1000;

export interface CompareItem {
  instanceType: string;
  /** USD/hour given for the type, on demand and on spot; looked up (aws) when absent. */
  onDemandUsdPerHour?: number;
  spotUsdPerHour?: number;
}

const ITEM = /^([^=/]*)(?:=([^/]*)(?:\/(.*))?)?$/;

function priceOf(text: string, what: string, item: string, example: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0) {
    throw new BadInputError(`--compare "${item}": the ${what} price "${text}" is not USD per hour (a number >= 0, e.g. ${example})`);
  }
  if (value > MAX_GIVEN_USD_PER_HOUR) {
    throw new BadInputError(`--compare "${item}": the ${what} price ${text} USD/hour is more than any instance costs (at most ${MAX_GIVEN_USD_PER_HOUR}): give the price per hour, e.g. ${example}`);
  }
  return value;
}

export function parseCompareItems(value: unknown): CompareItem[] {
  if (Array.isArray(value)) throw new BadInputError(`--compare is given ${value.length} times: give it once, its types separated by commas`);
  if (typeof value !== "string" || value.trim() === "") throw new BadInputError("--compare is empty: give 2 to 8 instance types, e.g. --compare m5.xlarge,c5.2xlarge");
  const items = value.split(",").map((item) => item.trim());
  if (items.some((item) => item === "")) throw new BadInputError(`--compare "${value}": an empty item (two commas in a row, or one at an end)`);
  const parsed = items.map((item): CompareItem => {
    const match = ITEM.exec(item);
    if (!match) throw new BadInputError(`--compare "${item}": expected TYPE, TYPE=USD_PER_HOUR or TYPE=USD_PER_HOUR/SPOT_USD_PER_HOUR`);
    const [, instanceType, onDemand, spot] = match;
    if (!INSTANCE_TYPE_PATTERN.test(instanceType)) throw new BadInputError(`--compare "${item}": "${instanceType}" is not an EC2 instance type (expected such as m5.4xlarge)`);
    return {
      instanceType,
      ...(onDemand !== undefined ? { onDemandUsdPerHour: priceOf(onDemand, "on-demand", item, `${instanceType}=0.192`) } : {}),
      ...(spot !== undefined ? { spotUsdPerHour: priceOf(spot, "spot", item, `${instanceType}=0.192/0.08`) } : {}),
    };
  });
  const seen = new Set<string>();
  for (const { instanceType } of parsed) {
    if (seen.has(instanceType)) throw new BadInputError(`--compare: ${instanceType} is given twice; each type runs once`);
    seen.add(instanceType);
  }
  if (parsed.length < MIN_COMPARED_TYPES || parsed.length > MAX_COMPARED_TYPES) {
    throw new BadInputError(`--compare: ${parsed.length} type(s) given; compare ${MIN_COMPARED_TYPES} to ${MAX_COMPARED_TYPES} types`);
  }
  return parsed;
}

/** On the local platform compute costs nothing and the type is ignored: the types differ only by the price given. */
export function requirePrices(items: readonly CompareItem[], platform: string): void {
  if (platform !== "local") return;
  const unpriced = items.filter((item) => item.onDemandUsdPerHour === undefined).map((item) => item.instanceType);
  if (unpriced.length > 0) {
    throw new BadInputError(
      `--compare on --platform local: give every type its price (${unpriced.map((t) => `${t}=USD_PER_HOUR`).join(", ")}): local compute costs nothing, so the types differ only by the price you give them`,
    );
  }
}

/** Flags a comparison cannot take, and the ones only it takes; undefined-valued flags are absent. */
export function checkCompareFlags(argv: Record<string, unknown>): void {
  const comparing = argv.compare !== undefined;
  if (!comparing) {
    if (argv.subjects !== undefined) throw new BadInputError("--subjects is --compare's extrapolation (how many subjects the batch would run): add --compare, or use --subjects-file for a batch");
    if (argv.wide !== undefined) throw new BadInputError("--wide is --compare's table with every phase's time: add --compare");
    return;
  }
  const refused: Array<[boolean, string]> = [
    [argv["subjects-file"] !== undefined || Boolean(argv["all-subjects"]), "--compare runs one subject on each type: give --subject, not --subjects-file or --all-subjects (use --subjects N to extrapolate to a batch)"],
    [Boolean(argv["dry-run"]), "--compare cannot be a --dry-run: it measures real runs (a --dry-run of one type shows what a job would be)"],
    [argv["instance-type"] !== undefined, "--compare sets each job's instance type: leave out --instance-type"],
    [argv["time-budget"] !== undefined, "--compare sets each job's instance type (a config's instanceType, auto or not, is ignored): leave out --time-budget"],
    [argv["engine-concurrency"] !== undefined, "--compare runs each type's engine at once, one per type: leave out --engine-concurrency (it is a batch's)"],
    [argv["price-per-hour"] !== undefined, "--compare takes each type's price in its item (TYPE=USD_PER_HOUR): leave out --price-per-hour"],
    [argv["job-id"] !== undefined, "--compare gives each type's job its own id: leave out --job-id"],
    [Number(argv.retries ?? 0) > 0, "--compare measures one attempt per type: leave out --retries"],
  ];
  for (const [bad, message] of refused) if (bad) throw new BadInputError(message);
  const subjects = argv.subjects;
  if (subjects !== undefined && (typeof subjects !== "number" || !Number.isInteger(subjects) || subjects < 1 || subjects > 10_000_000)) {
    throw new BadInputError(`--subjects ${String(subjects)}: expected a whole number of subjects from 1 to 10000000`);
  }
}

/** What `subjects` jobs would cost and take, `concurrency` at a time, if each were as the measured one. */
export function extrapolate(perSubjectUsd: number, wallSeconds: number, subjects: number, concurrency: number): { costUsd: number; wallSeconds: number } {
  // Rounded to the millisecond: 100 × 19.9 s is 1990 s, not 1989.9999999999998.
  return { costUsd: roundUsd(perSubjectUsd * subjects), wallSeconds: Math.round(Math.ceil(subjects / concurrency) * wallSeconds * 1000) / 1000 };
}

/** The jobs at once a batch of `subjects` on this type would get from the account's quotas (as a batch plans them). */
export function batchConcurrency(report: CapacityReport, concurrency: number, subjects: number): { concurrency: number; capped?: string } {
  const plan = planConcurrency(report, concurrency, false, subjects);
  return plan.capped ? { concurrency: plan.concurrency, capped: plan.capped } : { concurrency };
}

/** What the extrapolation takes for granted, said in the table's footer and the JSON. */
export function extrapolationAssumptions(c: { subject: string; subjects: number; concurrency: number; platform: string; types: ReadonlyArray<{ instanceType: string; batch?: { capped?: string } }> }): string[] {
  const capped = c.types.filter((t) => t.batch?.capped).map((t) => `${t.instanceType}: ${t.batch!.capped}`);
  const quotas =
    c.platform === "aws"
      ? capped.length > 0
        ? `${c.concurrency} jobs at once must fit the account's quotas, checked now as a batch would: ${capped.join("; ")}`
        : `${c.concurrency} jobs at once must fit the account's quotas: checked now for each type, as a batch would, and they fit`
      : `${c.concurrency} jobs at once must fit the account's quotas: not checked on --platform ${c.platform}`;
  return [
    `every subject is assumed to take and cost what ${c.subject} did on each type`,
    quotas,
    `WALL includes up and destroy, measured with ${c.types.length} Pulumi engines at once on this machine`,
  ];
}

/**
 * The types run at once, so together they must fit the account's quotas now: the vCPUs of each quota they share
 * (each type alone was checked as a job is) and one IAM role and instance profile each. Unread quotas only warn.
 */
export function checkTypesFitTogether(reports: ReadonlyArray<{ instanceType: string; report: CapacityReport }>): void {
  const byQuota = new Map<string, { name: string; free: number; need: number; types: string[] }>();
  for (const { instanceType, report } of reports) {
    const vcpus = report.vcpus;
    if (!vcpus) continue;
    const entry = byQuota.get(vcpus.quotaCode) ?? { name: vcpus.quotaName, free: Math.max(0, vcpus.quota - vcpus.inUse), need: 0, types: [] };
    entry.need += vcpus.perJob;
    entry.types.push(`${instanceType} ${vcpus.perJob}`);
    byQuota.set(vcpus.quotaCode, entry);
  }
  for (const quota of byQuota.values()) {
    if (quota.need > quota.free) {
      throw new BadInputError(`--compare: the types run at once need ${quota.need} vCPUs of "${quota.name}" (${quota.types.join(", ")}) and ${quota.free} are free now; nothing was created: compare fewer or smaller types, or raise the quota`);
    }
  }
  const iam = reports.find((r) => r.report.iam)?.report.iam;
  if (iam && iam.fitsJobs < reports.length) {
    throw new BadInputError(`--compare: ${reports.length} jobs need ${reports.length} IAM roles and instance profiles and ${iam.fitsJobs} fit now (roles ${iam.roles.left} left, instance profiles ${iam.instanceProfiles.left} left); nothing was created`);
  }
}
