/**
 * `--instance-type auto --time-budget MINUTES`: the cheapest instance type per subject among those the latest
 * comparison (`run --compare`, driver/comparisons.ts) measured finishing within the budget, for the job's image and
 * command on its platform and region. Chosen before the spec is built: "auto" never reaches a spec or a stack.
 */
import { BadInputError } from "./errors";
import { latestComparison } from "./comparisons";
import { comparisonKey, type Comparison, type ComparedType } from "../job/comparison";

export const AUTO_INSTANCE_TYPE = "auto";

/** Which type auto chose, from which comparison: printed, and in `--json`/`--dry-run` output. */
export interface InstanceTypeChoice {
  comparisonId: string;
  createdAt: string;
  chosen: string;
  costPerSubjectUsd: number;
  wallSeconds: number;
  budgetMinutes: number;
}

/** What the comparison must match: the job's container work, where it runs. */
export interface ComparedJob {
  image: string;
  command: readonly string[];
  platform: string;
  region: string;
}

const minutes = (seconds: number) => `${(seconds / 60).toFixed(1)} min`;

type Candidate = ComparedType & { costPerSubjectUsd: number };

/** A type a later job may be given: it succeeded, and is priced. */
const isCandidate = (t: ComparedType): t is Candidate => t.outcome === "succeeded" && t.costPerSubjectUsd !== undefined;

/**
 * The cheapest succeeded type whose wall time fits the budget; of equal costs the faster, then the first by name
 * (so the same comparison always gives the same answer).
 */
export function chooseInstanceType(comparison: Comparison, budgetMinutes: number): InstanceTypeChoice {
  const fitting = comparison.types
    .filter(isCandidate)
    .filter((t) => t.wallSeconds <= budgetMinutes * 60)
    .sort((a, b) => a.costPerSubjectUsd - b.costPerSubjectUsd || a.wallSeconds - b.wallSeconds || a.instanceType.localeCompare(b.instanceType));
  const best = fitting[0];
  if (!best) throw new BadInputError(noneWithinBudget(comparison, budgetMinutes));
  return { comparisonId: comparison.comparisonId, createdAt: comparison.createdAt, chosen: best.instanceType, costPerSubjectUsd: best.costPerSubjectUsd, wallSeconds: best.wallSeconds, budgetMinutes };
}

function noneWithinBudget(comparison: Comparison, budgetMinutes: number): string {
  const of = `comparison ${comparison.comparisonId} of ${comparison.createdAt}`;
  const candidates = comparison.types.filter(isCandidate);
  const times = comparison.types.map((t) => `${t.instanceType} ${isCandidate(t) ? minutes(t.wallSeconds) : `${t.outcome} (not a candidate)`}`);
  if (candidates.length === 0) return `--instance-type auto: no type of ${of} succeeded (${times.join(", ")}): run --compare again`;
  const fastest = candidates.reduce((a, b) => (b.wallSeconds < a.wallSeconds ? b : a));
  return `--instance-type auto: no type of ${of} finished within --time-budget ${budgetMinutes} min: ${times.join(", ")}; the fastest is ${fastest.instanceType} (${minutes(fastest.wallSeconds)}): give a budget of at least ${Math.ceil(fastest.wallSeconds / 60)} min, or compare faster types`;
}

/** The choice for `job`, from the newest comparison of its image and command on its platform and region. */
export function resolveAutoInstanceType(job: ComparedJob, budgetMinutes: number, dir?: string): InstanceTypeChoice {
  const comparison = latestComparison(comparisonKey(job.image, job.command), { platform: job.platform, region: job.region }, dir);
  if (!comparison) {
    const command = job.command.length > 0 ? `command ${JSON.stringify(job.command)}` : "the image's default command";
    throw new BadInputError(
      `--instance-type auto: no comparison of instance types for image ${job.image} with ${command} on ${job.platform} in ${job.region}: ` +
        `run one first with the same config and flags, e.g. npm run job -- --subject <one subject> --instance-type m5.xlarge --compare m5.xlarge,c5.2xlarge,m5.2xlarge`,
    );
  }
  return chooseInstanceType(comparison, budgetMinutes);
}

/** The line saying which comparison chose the type, and why. */
export function choiceLine(choice: InstanceTypeChoice): string {
  return `instance type auto: ${choice.chosen} from comparison ${choice.comparisonId} of ${choice.createdAt}: $${choice.costPerSubjectUsd} per subject, ${minutes(choice.wallSeconds)} wall time, the cheapest within --time-budget ${choice.budgetMinutes} min`;
}

/**
 * The time budget as given (`--time-budget`), checked against the instance type: each needs the other. Undefined
 * when the type is not auto.
 */
export function autoBudget(instanceType: string | undefined, budget: unknown): number | undefined {
  const auto = instanceType?.trim() === AUTO_INSTANCE_TYPE;
  if (budget === undefined) {
    if (auto) throw new BadInputError("--instance-type auto picks the cheapest type that finished within a time budget: give --time-budget MINUTES (e.g. --time-budget 60)");
    return undefined;
  }
  if (typeof budget !== "number" || !Number.isFinite(budget) || budget <= 0) throw new BadInputError(`--time-budget ${String(budget)}: expected minutes, a number > 0`);
  if (!auto) throw new BadInputError(`--time-budget is for --instance-type auto (the instance type here is ${instanceType ?? "not set"}): add --instance-type auto, or leave --time-budget out`);
  return budget;
}
