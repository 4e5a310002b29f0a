/**
 * `--instance-type auto --time-budget MINUTES`: the cheapest instance type per subject among those a comparison
 * (`run --compare`, driver/comparisons.ts) measured finishing within the budget, for the job's image and command on
 * its platform and region — the newest comparison where some type succeeded and is priced (one interrupted or
 * failed comparison does not hide older good ones). Costs are the ones that apply to the job: spot for a spot job,
 * on demand otherwise. Chosen before the spec is built: "auto" never reaches a spec or a stack.
 */
import { BadInputError } from "./errors";
import { comparisonsFor } from "./comparisons";
import { comparisonKey, type Comparison, type ComparedType } from "../job/comparison";

export const AUTO_INSTANCE_TYPE = "auto";

/** Which cost ranked the types: the job's own (spot or on demand), or, from a file that says neither, the cost as compared. */
export type CostBasis = "spot" | "on-demand" | "as-compared";

/** Which type auto chose, from which comparison: printed, and in `--json`/`--dry-run` output. */
export interface InstanceTypeChoice {
  comparisonId: string;
  createdAt: string;
  chosen: string;
  costPerSubjectUsd: number;
  costBasis: CostBasis;
  wallSeconds: number;
  budgetMinutes: number;
  /** Newer comparisons passed over: no type of theirs succeeded with a price for this job. */
  passedOver?: Array<{ comparisonId: string; createdAt: string }>;
}

/** What the comparison must match: the job's container work, where it runs; and how it runs (spot or not). */
export interface ComparedJob {
  image: string;
  command: readonly string[];
  platform: string;
  region: string;
  spot: boolean;
}

const minutes = (seconds: number) => `${(seconds / 60).toFixed(1)} min`;

type Candidate = ComparedType & { cost: number; costBasis: CostBasis };

/**
 * One subject's cost on `t` for a spot or on-demand job, and which it is. A comparison that does not say whether it
 * ran on spot (older files) has only its cost as compared to offer when the job's own is missing.
 */
export function costFor(t: ComparedType, comparison: Pick<Comparison, "spot">, spotJob: boolean): { cost: number; costBasis: CostBasis } | undefined {
  const own = spotJob ? t.spotUsd : t.onDemandUsd;
  if (own !== undefined) return { cost: own, costBasis: spotJob ? "spot" : "on-demand" };
  if (t.costPerSubjectUsd === undefined) return undefined;
  if (comparison.spot === undefined) return { cost: t.costPerSubjectUsd, costBasis: "as-compared" };
  return comparison.spot === spotJob ? { cost: t.costPerSubjectUsd, costBasis: spotJob ? "spot" : "on-demand" } : undefined;
}

/** The types a job may be given: succeeded, and priced for how the job runs. */
function candidates(comparison: Comparison, spotJob: boolean): Candidate[] {
  return comparison.types.flatMap((t) => {
    const cost = t.outcome === "succeeded" ? costFor(t, comparison, spotJob) : undefined;
    return cost ? [{ ...t, ...cost }] : [];
  });
}

/**
 * The cheapest succeeded type whose wall time fits the budget; of equal costs the faster, then the first by name
 * (so the same comparison always gives the same answer).
 */
export function chooseInstanceType(comparison: Comparison, budgetMinutes: number, spotJob = false): InstanceTypeChoice {
  const fitting = candidates(comparison, spotJob)
    .filter((t) => t.wallSeconds <= budgetMinutes * 60)
    .sort((a, b) => a.cost - b.cost || a.wallSeconds - b.wallSeconds || a.instanceType.localeCompare(b.instanceType));
  const best = fitting[0];
  if (!best) throw new BadInputError(noneWithinBudget(comparison, budgetMinutes, spotJob));
  return { comparisonId: comparison.comparisonId, createdAt: comparison.createdAt, chosen: best.instanceType, costPerSubjectUsd: best.cost, costBasis: best.costBasis, wallSeconds: best.wallSeconds, budgetMinutes };
}

const costWord = (spotJob: boolean) => (spotJob ? "a spot cost" : "an on-demand cost");

const named = (c: { comparisonId: string; createdAt: string }) => `comparison ${c.comparisonId} of ${c.createdAt}`;

/** Why no type of `comparison` can be chosen; `again` ends the message when none even succeeded with a price. */
function noneWithinBudget(comparison: Comparison, budgetMinutes: number, spotJob: boolean, again = ": run --compare again"): string {
  const found = candidates(comparison, spotJob);
  const isCandidate = (t: ComparedType) => found.some((c) => c.instanceType === t.instanceType);
  const times = comparison.types.map((t) => `${t.instanceType} ${isCandidate(t) ? minutes(t.wallSeconds) : `${t.outcome}${t.outcome === "succeeded" ? ` without ${costWord(spotJob)}` : ""} (not a candidate)`}`);
  if (found.length === 0) return `--instance-type auto: no type of ${named(comparison)} succeeded with ${costWord(spotJob)} (${times.join(", ") || "no types"})${again}`;
  const fastest = found.reduce((a, b) => (b.wallSeconds < a.wallSeconds ? b : a));
  return `--instance-type auto: no type of ${named(comparison)} finished within --time-budget ${budgetMinutes} min: ${times.join(", ")}; the fastest is ${fastest.instanceType} (${minutes(fastest.wallSeconds)}): give a budget of at least ${Math.ceil(fastest.wallSeconds / 60)} min, or compare faster types`;
}

/** The comparisons of `job`'s image and command on its platform and region, newest first. */
export function comparisonsOf(job: Omit<ComparedJob, "spot">, dir?: string): Comparison[] {
  return comparisonsFor(comparisonKey(job.image, job.command), { platform: job.platform, region: job.region }, dir);
}

/**
 * The choice for `job`, from the newest comparison of its image and command on its platform and region that has a
 * candidate; newer ones without are named in the choice. With no comparison at all, `suggestion()` is the
 * `--compare` command to run first.
 */
export function resolveAutoInstanceType(job: ComparedJob, budgetMinutes: number, options: { dir?: string; suggestion?: () => string } = {}): InstanceTypeChoice {
  const comparisons = comparisonsOf(job, options.dir);
  if (comparisons.length === 0) {
    const command = job.command.length > 0 ? `command ${JSON.stringify(job.command)}` : "the image's default command";
    throw new BadInputError(
      `--instance-type auto: no comparison of instance types for image ${job.image} with ${command} on ${job.platform} in ${job.region}: run one first` +
        (options.suggestion ? `:\n  ${options.suggestion()}` : " (npm run job -- --subject SUBJECT --compare TYPE,TYPE,...)"),
    );
  }
  const usable = comparisons.findIndex((c) => candidates(c, job.spot).length > 0);
  if (usable < 0) {
    const older = comparisons.length > 1 ? ` (nor any of the ${comparisons.length - 1} older)` : "";
    const again = options.suggestion ? `:\n  ${options.suggestion()}` : "";
    throw new BadInputError(noneWithinBudget(comparisons[0], budgetMinutes, job.spot, `${older}: run --compare again${again}`));
  }
  const choice = chooseInstanceType(comparisons[usable], budgetMinutes, job.spot);
  const passedOver = comparisons.slice(0, usable).map(({ comparisonId, createdAt }) => ({ comparisonId, createdAt }));
  return passedOver.length > 0 ? { ...choice, passedOver } : choice;
}

const COST_WORDS: Record<CostBasis, string> = { spot: "on spot", "on-demand": "on demand", "as-compared": "as compared (the comparison does not say spot or on demand)" };

/** The line saying which comparison chose the type, at which cost, and why. */
export function choiceLine(choice: InstanceTypeChoice): string {
  const passed = choice.passedOver?.length ? ` (newer ${choice.passedOver.map(named).join(", ")}: no type succeeded with a price)` : "";
  return `instance type auto: ${choice.chosen} from ${named(choice)}${passed}: $${choice.costPerSubjectUsd} per subject ${COST_WORDS[choice.costBasis]}, ${minutes(choice.wallSeconds)} wall time, the cheapest within --time-budget ${choice.budgetMinutes} min`;
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
