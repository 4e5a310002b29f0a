/**
 * The batch form of `run`: the subjects (a subjects file, or `--all-subjects` from a manifest), each subject's job
 * resolved and its inputs' regions checked in this process — every row and every subject refused before any worker
 * starts — then one worker per subject (driver/batch.ts).
 */
import { BadInputError } from "./errors";
import { batchTable, checkDistinctFolders, runBatch } from "./batch";
import { dryRun } from "./run";
import { estimateFor, estimateLine } from "./dry-run";
import { printable } from "./summary";
import { secretsPassphraseProblem } from "./preflight";
import { backendUrl } from "../common/paths";
import type { ResolvedJob, SpecFlags } from "./options";
import { inputSignerFor, type InputSigner } from "./input-signing";
import { packageManifestFor, packageRequest, resolvePackageJob, type PackageOptions } from "./nda-package";
import { checkInputRegions, RegionCache } from "./regions";
import { allSubjectsFromManifest, exclusionTable, readSubjectsList, type SubjectsList } from "./subjects";
import type { SubjectSelection } from "../job/nda-manifest";
import { redactUrl } from "../job/spec";
import { capacityFor } from "./quota-reads";
import { planConcurrency, quotaWarnings } from "./quotas";
import { batchKey } from "./batch-resume";
import { choiceLine } from "./instance-type-auto";

/** Jobs in flight when --concurrency is not given (capped to what the account's quotas fit). */

import { DEFAULT_CONCURRENCY, defaultEngineConcurrency, SUBJECT_INPUTS_FLAG } from "./worker-env";
export { SUBJECT_INPUTS_FLAG };

export interface BatchCommandOptions {
  workerArgs: string[];
  signal: () => AbortSignal;
  printJson: (value: unknown) => void;
}

/** The job of one subject: the shared flags, the subject, and its row's input URLs. */
export function resolveSubject(flags: SpecFlags, list: SubjectsList, subject: string, file: string | undefined, signer: InputSigner | undefined, nda: PackageOptions): Promise<ResolvedJob> {
  const urls = list.inputs[subject];
  return resolvePackageJob({ ...flags, subject }, nda, urls ? { inputOverrides: { urls, where: `subjects file ${file} line ${list.lines[subject]}` } } : {}, signer);
}

/** Warnings once each, however many subjects share them. */
export function printWarnings(lines: Iterable<string>, seen = new Set<string>()): void {
  for (const line of lines) {
    if (seen.has(line)) continue;
    seen.add(line);
    process.stderr.write(`warning: ${line}\n`);
  }
}

/** What to say about a resolved job before it runs: its warnings, and which type `--instance-type auto` chose and why. */
export function printJobNotes(resolved: ResolvedJob, seen = new Set<string>()): void {
  printWarnings(resolved.warnings, seen);
  if (resolved.instanceTypeChoice) process.stderr.write(`${choiceLine(resolved.instanceTypeChoice)}\n`);
}

/** The workers' flags with the instance type auto chose in place of auto (they never choose again, nor differently). */
export function withChosenType(workerArgs: readonly string[], chosen: string): string[] {
  const args: string[] = [];
  for (let i = 0; i < workerArgs.length; i++) {
    if (workerArgs[i] === "--instance-type") i++;
    else args.push(workerArgs[i]);
  }
  return [...args, "--instance-type", chosen];
}

/** Inputs elsewhere than the instance are refused unless allowed; the local platform reads from this machine, whatever its region. */
export async function checkRegions(resolved: ResolvedJob, cache: RegionCache): Promise<string[]> {
  if (resolved.platform !== "aws") return [];
  return checkInputRegions(resolved.spec, { allowCrossRegion: resolved.allowCrossRegion, cache });
}

export async function runBatchCommand(argv: Record<string, unknown>, flags: SpecFlags, options: BatchCommandOptions): Promise<number> {
  const file = argv["subjects-file"] === undefined ? undefined : String(argv["subjects-file"]);
  const all = Boolean(argv["all-subjects"]);
  if (flags.subject) throw new BadInputError(`give either --subject or ${all ? "--all-subjects" : "--subjects-file"}, not both`);
  if (all && file) throw new BadInputError("give either --subjects-file or --all-subjects, not both");
  let list: SubjectsList;
  let selection: SubjectSelection | undefined;
  if (all) {
    selection = allSubjectsFromManifest(flags, await packageManifestFor(flags));
    process.stderr.write(exclusionTable(selection));
    list = { subjects: selection.included, inputs: {}, lines: {} };
  } else list = readSubjectsList(file!);
  // Every subject's job is resolved here, so a bad row or an unreadable manifest entry stops the batch before any worker.
  const cache = new RegionCache();
  const signer = await inputSignerFor(flags, cache);
  const jobs: ResolvedJob[] = [];
  // With an NDA package the workers read the credentials from the environment too (keepEnv); each worker asks for its
  // own URLs just before staging (they expire), so here they are asked for only to show them in a dry run.
  const nda: PackageOptions = { keepEnv: true, presign: Boolean(argv["dry-run"]) };
  // --instance-type auto is chosen once, with the first subject, for the whole batch.
  let jobFlags = flags;
  for (const subject of list.subjects) {
    const job = await resolveSubject(jobFlags, list, subject, file, signer, nda);
    if (job.instanceTypeChoice) jobFlags = { ...flags, instanceType: job.instanceTypeChoice.chosen, timeBudget: undefined };
    jobs.push(job);
  }
  const choice = jobs[0].instanceTypeChoice;
  const workerArgs = choice ? withChosenType(options.workerArgs, choice.chosen) : options.workerArgs;
  checkDistinctFolders(list.subjects, jobs[0].spec.outputs.layout);
  const seen = new Set<string>();
  for (const job of jobs) printJobNotes(job, seen);
  // Shown by column: `input` (the first input) and `input.NAME`, as the subjects file's header names them.
  const byColumn = (urls: Record<string, string>) => Object.fromEntries(Object.entries(urls).map(([name, url]) => [name === "" ? "input" : `input.${name}`, url]));
  const subjectInputs = Object.keys(list.inputs).length > 0 ? Object.fromEntries(Object.entries(list.inputs).map(([subject, urls]) => [subject, byColumn(urls)])) : undefined;
  // A parent asks for no package URL: the inputs its workers will presign (presignPackageInputs) count as presigned.
  const staged = (spec: ResolvedJob["spec"]) => (packageRequest(flags) ? { ...spec, inputs: spec.inputs.map((i) => (i.origin !== undefined || i.access === "presigned" ? { ...i, access: "presigned" as const } : i)) } : spec);
  const secrets = jobs.map((job) => secretsPassphraseProblem(staged(job.spec), backendUrl(job.backend))).find(Boolean);
  if (secrets && !argv["dry-run"]) throw new BadInputError(secrets); // before any worker starts, not once per worker
  if (secrets) printWarnings([`without --dry-run this batch would be refused (exit 2): ${secrets}`], seen);
  // One instance type and region for every job: the quotas are read once and weighed against the whole batch.
  const capacity = await capacityFor(jobs[0]);
  printWarnings(quotaWarnings(capacity), seen);
  const explicit = argv.concurrency !== undefined;
  const requested = explicit ? Number(argv.concurrency) : DEFAULT_CONCURRENCY;
  const plan = planConcurrency(capacity, requested, explicit, list.subjects.length);
  if (plan.capped) process.stderr.write(`[batch] ${plan.capped}\n`);
  if (argv["dry-run"]) {
    // A row's https URL is presigned: printed without its signature, as the jobs' specs print it.
    const shown = subjectInputs && Object.fromEntries(Object.entries(subjectInputs).map(([subject, urls]) => [subject, Object.fromEntries(Object.entries(urls).map(([name, url]) => [name, redactUrl(url)]))]));
    // One instance type and region for every job: one price, times the subjects.
    const estimate = await estimateFor(jobs[0], { expectedMinutes: argv["expected-minutes"] as number | undefined, pricePerHour: argv["price-per-hour"] as number | undefined, subjects: jobs.length });
    if (estimate) process.stderr.write(`${estimateLine(estimate)}\n`);
    const preview = { dryRun: true, subjects: list.subjects, ...(selection ? { excluded: selection.excluded } : {}), ...(shown ? { subjectInputs: shown } : {}), quotas: { ...capacity, plan }, ...(choice ? { instanceTypeChoice: choice } : {}), ...(estimate ? { estimate } : {}), jobs: jobs.map(dryRun) };
    // Every job's spec and user-data is megabytes for a study: a terminal gets the gist, --json the whole.
    if (argv.json) options.printJson(preview);
    else process.stdout.write(batchPreview(jobs, plan.concurrency));
    return 0;
  }
  for (const job of jobs) printWarnings(await checkRegions(job, cache), seen);
  const subjectArgs = (subject: string) => (list.inputs[subject] ? [`--${SUBJECT_INPUTS_FLAG}`, JSON.stringify({ urls: list.inputs[subject], where: `subjects file ${file} line ${list.lines[subject]}` })] : []);
  const rerun = Boolean(argv.rerun);
  const result = await runBatch({
    jobs,
    key: batchKey(jobs, rerun),
    concurrency: plan.concurrency,
    engineConcurrency: argv["engine-concurrency"] === undefined ? defaultEngineConcurrency() : Number(argv["engine-concurrency"]),
    retries: Number(argv.retries ?? 0),
    rerun,
    pricePerHour: argv["price-per-hour"] as number | undefined,
    json: Boolean(argv.json),
    workerArgs,
    subjectArgs,
    signal: options.signal(),
  });
  process.stderr.write(batchTable(result));
  if (argv.json) options.printJson(choice ? { ...result, instanceTypeChoice: choice } : result);
  return result.exitCode;
}

/** A batch dry run in a few lines (the estimate is on stderr): what would run where, how many at once, how to see it all. */
function batchPreview(jobs: ResolvedJob[], concurrency: number): string {
  const { instance, container, outputs } = jobs[0].spec;
  const first = dryRun(jobs[0]);
  return [
    `dry run: ${jobs.length} subject(s), one job each; nothing was created`,
    `  platform ${jobs[0].platform}: ${instance.type} in ${instance.region} (${instance.spot ? "spot" : "on demand"}), ${concurrency} job(s) at once`,
    `  image ${printable(container.image)}; results under ${printable(String(outputs.prefix))}`,
    `  first job: stack ${String(first.stack)}, results ${String(first.resultsUrl)}`,
    "  --json prints every job's spec, stack and user-data",
  ].join("\n") + "\n";
}
