/**
 * What the account lets a batch run at once, before anything is launched: the EC2 vCPU quota of the instance type's
 * class (Service Quotas counts the vCPUs of all running instances of the class in the region) and IAM's per-account
 * roles and instance profiles (every job creates one of each). The arithmetic and the messages live here; the reads
 * are in quota-reads.ts.
 */
import { BadInputError } from "./errors";

/** An EC2 vCPU quota class: the families it covers and its Service Quotas codes (on-demand, spot). */
export interface QuotaClass {
  name: string;
  onDemand: string;
  spot: string;
}

const STANDARD: QuotaClass = { name: "Standard (A, C, D, H, I, M, R, T, Z)", onDemand: "L-1216C47A", spot: "L-34B43A08" };
/** Families whose prefix would otherwise be read as a standard one (dl → d, inf → i, trn → t). */
const BY_PREFIX: Record<string, QuotaClass> = {
  dl: { name: "DL", onDemand: "L-6E869C2A", spot: "L-85EED4F7" },
  inf: { name: "Inf", onDemand: "L-1945791B", spot: "L-B5D1601B" },
  trn: { name: "Trn", onDemand: "L-2C3B7624", spot: "L-6B0D517C" },
  vt: { name: "G and VT", onDemand: "L-DB2E81BA", spot: "L-3819A6DF" },
};
const BY_LETTER: Record<string, QuotaClass> = {
  f: { name: "F", onDemand: "L-74FC7D96", spot: "L-88CF9481" },
  g: BY_PREFIX.vt,
  p: { name: "P", onDemand: "L-417A185B", spot: "L-7212CCBC" },
  x: { name: "X", onDemand: "L-7295265B", spot: "L-E3A00192" },
  ...Object.fromEntries([..."acdhimrtz"].map((letter) => [letter, STANDARD])),
};
/** Families with quotas of their own we do not read (high memory u-*, hpc, mac): their quota is reported unknown. */
const UNHANDLED = new Set(["u-", "hpc", "mac"]);

/** The quota class of an instance type (m5.4xlarge → Standard, g4dn.xlarge → G and VT), or undefined. */
export function quotaClassOf(instanceType: string): QuotaClass | undefined {
  const prefix = /^([a-z]+-?)/.exec(instanceType.toLowerCase())?.[1];
  if (!prefix || UNHANDLED.has(prefix)) return undefined;
  return BY_PREFIX[prefix] ?? BY_LETTER[prefix[0]];
}

/** The quota's name as the Service Quotas console shows it, for messages. */
export function quotaName(cls: QuotaClass, spot: boolean): string {
  return spot ? `All ${cls.name} Spot Instance Requests` : `Running On-Demand ${cls.name} instances`;
}

export interface VcpuFigures {
  quotaCode: string;
  quotaName: string;
  /** vCPUs the quota allows in the region. */
  quota: number;
  /** vCPUs of the class's running and pending instances (of this market) in the region now. */
  inUse: number;
  /** vCPUs of one job's instance type. */
  perJob: number;
  fitsJobs: number;
}

export interface IamFigures {
  roles: { used: number; quota: number; left: number };
  instanceProfiles: { used: number; quota: number; left: number };
  /** Each job creates one role and one instance profile. */
  fitsJobs: number;
}

export interface CapacityReport {
  /** False for the local platform, which has no account quotas. */
  checked: boolean;
  note?: string;
  region?: string;
  instanceType?: string;
  market?: "on-demand" | "spot";
  vcpus?: VcpuFigures;
  iam?: IamFigures;
  /** Jobs that fit now: the smallest of the known limits; absent when none could be read. */
  fitsJobs?: number;
  /** What could not be read, and why (no permission, API unreachable, unknown class): warned about, not refused. */
  unknown: string[];
}

export const LOCAL_REPORT: CapacityReport = { checked: false, note: "the local platform has no account quotas: not checked", unknown: [] };

export function vcpuFigures(cls: QuotaClass, spot: boolean, quota: number, inUse: number, perJob: number): VcpuFigures {
  const free = Math.max(0, Math.floor(quota) - inUse);
  return { quotaCode: spot ? cls.spot : cls.onDemand, quotaName: quotaName(cls, spot), quota, inUse, perJob, fitsJobs: perJob > 0 ? Math.floor(free / perJob) : 0 };
}

/** IAM's GetAccountSummary map (`Roles`, `RolesQuota`, `InstanceProfiles`, `InstanceProfilesQuota`) as figures. */
export function iamFigures(summary: Record<string, number | undefined>): IamFigures {
  const pair = (used: string, quota: string) => {
    const u = summary[used];
    const q = summary[quota];
    if (typeof u !== "number" || typeof q !== "number") throw new Error(`GetAccountSummary gave no ${used}/${quota}`);
    return { used: u, quota: q, left: Math.max(0, q - u) };
  };
  const roles = pair("Roles", "RolesQuota");
  const instanceProfiles = pair("InstanceProfiles", "InstanceProfilesQuota");
  return { roles, instanceProfiles, fitsJobs: Math.min(roles.left, instanceProfiles.left) };
}

/** The report with its overall figure: the tightest of the limits that could be read. */
export function withFits(report: Omit<CapacityReport, "fitsJobs">): CapacityReport {
  const known = [report.vcpus?.fitsJobs, report.iam?.fitsJobs].filter((n): n is number => n !== undefined);
  return { ...report, ...(known.length > 0 ? { fitsJobs: Math.min(...known) } : {}) };
}

/** The limits as one line a user can act on: which quota, its value, what is used, what a job needs. */
export function describeLimits(report: CapacityReport): string {
  const parts: string[] = [];
  const v = report.vcpus;
  if (v) {
    parts.push(
      `EC2 quota "${v.quotaName}" (${v.quotaCode}) in ${report.region} is ${v.quota} vCPUs, ${v.inUse} in use, ` +
        `${report.instanceType} needs ${v.perJob} per job: ${v.fitsJobs} job(s) fit`,
    );
  }
  const i = report.iam;
  if (i) {
    parts.push(
      `IAM: ${i.roles.used} of ${i.roles.quota} roles and ${i.instanceProfiles.used} of ${i.instanceProfiles.quota} instance profiles used, ` +
        `one of each per job: ${i.fitsJobs} job(s) fit`,
    );
  }
  return parts.join("; ");
}

function howToRaise(report: CapacityReport): string {
  const v = report.vcpus;
  const quota = v && v.fitsJobs === report.fitsJobs ? `Service Quotas → Amazon EC2 → "${v.quotaName}" (${v.quotaCode})` : "the IAM quotas";
  return `ask AWS for more (${quota}), or wait for running instances to end`;
}

/** Warnings for what could not be read: the run goes on, unchecked. */
export function quotaWarnings(report: CapacityReport): string[] {
  return report.unknown.map((what) => `quota not checked: ${what}`);
}

/** A single job: refused when it cannot fit now, with the numbers. Unknown quotas only warn. */
export function checkJobFits(report: CapacityReport): void {
  if (report.fitsJobs === 0) throw new BadInputError(`this job does not fit the account's quotas now: ${describeLimits(report)}. Nothing was created; ${howToRaise(report)}`);
}

export interface ConcurrencyPlan {
  requested: number;
  explicit: boolean;
  /** Jobs the batch would run at once. */
  concurrency: number;
  /** Why it is lower than asked, when it is. */
  capped?: string;
}

/**
 * Concurrency that fits: a default above what fits is capped (and says so); an explicit `--concurrency` that cannot
 * fit is refused with the numbers, as is any batch when not one job fits. Only `min(concurrency, jobs)` run at once,
 * so a small batch under a big --concurrency is not refused.
 */
export function planConcurrency(report: CapacityReport, requested: number, explicit: boolean, jobs: number): ConcurrencyPlan {
  const wanted = Math.max(1, Math.min(requested, jobs));
  const fits = report.fitsJobs;
  if (fits === undefined || wanted <= fits) return { requested, explicit, concurrency: requested };
  if (fits === 0) throw new BadInputError(`no job of this batch fits the account's quotas now: ${describeLimits(report)}. Nothing was created; ${howToRaise(report)}`);
  if (explicit) {
    throw new BadInputError(
      `--concurrency ${requested} cannot fit: ${describeLimits(report)}. Nothing was created; give --concurrency ${fits} or less, or ${howToRaise(report)}`,
    );
  }
  return { requested, explicit, concurrency: fits, capped: `concurrency capped to ${fits} (asked ${requested}): ${describeLimits(report)}` };
}
