/**
 * `npm run job -- ...` / `cloudcompute ...`: a thin yargs layer over the driver's modules. Progress and summaries go
 * to stderr (but `run --compare`'s table, its output, goes to stdout); `--json` puts exactly one JSON document on
 * stdout (a batch: one JSON event per line, its result last).
 * Exit codes: see errors.ts (0/1/2/3/130).
 */
import yargs, { Argv, Options } from "yargs";
import { hideBin } from "yargs/helpers";
import { DEFAULT_CONCURRENCY, SUBJECT_INPUTS_FLAG, WORKER_ARGS_ENV } from "./worker-env";
import { errorMessage } from "../common/errors";
import { BadInputError, DriverError, ExitCode } from "./errors";
import type { SpecFlags } from "./options";
import { ALL_KEYS, DEPLOY_KEYS, isRepeatable, type ConfigKey } from "../job/config-keys";
import { silenceAwsSdkNodeNotice } from "../job/node-support";

// Each command loads what it needs when it runs: the Pulumi Automation API (~1 s) and the AWS SDK only for the
// commands that use them, so `--help`, `list` and `status` start in a fraction of a second. require(), not import():
// tsx's CommonJS hook (the unbuilt path) does not see dynamic import()s.
let loadedRun: typeof import("./run") | undefined;
const runModule = () => (loadedRun ??= require("./run") as typeof import("./run"));
const batchCommand = () => require("./batch-command") as typeof import("./batch-command");
const commands = () => require("./commands") as typeof import("./commands");
const inspect = () => require("./inspect") as typeof import("./inspect");
/** A key's flag as yargs declares it; its help says the default and the key it overrides. */
function keyOption(entry: ConfigKey): Options {
  const { form, choices } = entry.flag;
  const type = form === "number" ? "number" : form === "boolean" ? "boolean" : "string";
  const many = isRepeatable(form);
  const defaultText = entry.defaultValue ? `; default ${entry.defaultValue}` : "";
  return { type, ...(many ? { array: true } : {}), ...(choices ? { choices: [...choices] } : {}), describe: `${entry.help} [${entry.key}${defaultText}]` };
}

/** The backend flag, which the inspecting commands take too. */
const BACKEND_OPTION = { ...keyOption(DEPLOY_KEYS.backend), type: "string" } as const;

/** Flags describing a job, one per config key (job/config-keys.ts); also rebuilt into each batch worker's command line. */
const SPEC_OPTIONS: Record<string, Options> = {
  config: { type: "string", describe: "Pulumi.<stack>.yaml-style config file with cloudcompute:* keys (default Pulumi.dev.yaml if present)" },
  "nda-credentials": { type: "string", describe: "With --nda-package: a private file (chmod 600) of username=... and password=... lines (default: NDA_USERNAME and NDA_PASSWORD from the environment); never a config key" },
  ...Object.fromEntries(ALL_KEYS.map((entry) => [entry.flag.name, keyOption(entry)])),
};

const RUN_OPTIONS = {
  "dry-run": { type: "boolean", default: false, describe: "Validate and render the spec, stack name and user-data; create nothing" },
  json: { type: "boolean", default: false, describe: "Print one JSON result on stdout (progress stays on stderr); a batch prints one JSON event per line, its result last" },
  retries: { type: "number", default: 0, describe: "Retry a spot-interrupted job, or one whose instance EC2 lost (Server.* reasons); never other failures. The last retry is on-demand" },
  "price-per-hour": { type: "number", describe: "USD/hour for the cost estimate instead of the built-in on-demand/spot price" },
  "expected-minutes": { type: "number", describe: "With --dry-run: estimate the cost if each job's instance lives this many minutes, launch to termination (boot, image pull, inputs, run, outputs, teardown; not just the container's run), instance and volume as AWS bills them, with the price's source and date; without it the estimate uses a comparison's measured time for the instance type, if there is one" },
  "time-budget": { type: "number", describe: "With --instance-type auto (and needed by it): the minutes each subject's job may take, launch to teardown (not the batch's); auto picks the cheapest type a comparison (run --compare) saw finish within them" },
  verbose: { type: "boolean", default: false, describe: "Show the Pulumi engine's output" },
  "subjects-file": { type: "string", describe: "Batch: run one job per subject listed in this file (one per line or first column; a CSV header subject,input[,input.NAME] gives per-subject input URLs)" },
  "all-subjects": { type: "boolean", describe: "Batch: every subject the manifest (or --nda-package's) holds a file for (with --data-type/--session/--pick); the others are listed with the reason" },
  [SUBJECT_INPUTS_FLAG]: { type: "string", hidden: true, describe: "A batch worker's subjects-file inputs (JSON)" },
  concurrency: { type: "number", describe: `Batch: jobs in flight at once (launching, running or being torn down); default ${DEFAULT_CONCURRENCY}, capped to what the account's quotas fit (aws); a value that cannot fit is refused` },
  "engine-concurrency": { type: "number", describe: "Batch: jobs being created or destroyed at once (each a Pulumi engine process, CPU-bound for its seconds, ~450 MB at peak); running jobs need none, so this caps launch and teardown speed, not --concurrency; default one per core" },
  "engine-worker": { type: "boolean", hidden: true, describe: "A batch's engine worker (its request on stdin)" },
  rerun: { type: "boolean", default: false, describe: "Batch: also run subjects that already have a success marker" },
  compare: { type: "string", describe: "Run the subject on each of these instance types at once and compare time and cost: TYPE[=USD_PER_HOUR[/SPOT_USD_PER_HOUR]],... (2 to 8; local: every price given)" },
  subjects: { type: "number", describe: "With --compare: extrapolate cost and wall time to a batch of this many subjects (--concurrency at a time); default 1" },
  wide: { type: "boolean", describe: "With --compare: the table also shows each phase's time (up, the agent's phases, destroy)" },
} as const satisfies Record<string, Options>;

/** `list`'s filters (driver/inspect.ts checks their values). */
const LIST_FILTERS = {
  batch: { type: "string", describe: "Only the jobs of this batch (its id, as the batch prints it)" },
  subject: { type: "string", describe: "Only this subject's jobs" },
  outcome: { type: "string", describe: "Only jobs in this state: succeeded, failed, error, interrupted, creating, running, destroying" },
  since: { type: "string", describe: "Only jobs started at or after this date (2026-11-29) or ISO time" },
  until: { type: "string", describe: "Only jobs started before this time; a bare date includes that whole day" },
} as const satisfies Record<string, Options>;

/** Flags forwarded to batch workers: every job-describing flag the user gave, plus run flags that apply per job. */
function workerArgs(argv: Record<string, unknown>): string[] {
  const args: string[] = [];
  for (const name of [...Object.keys(SPEC_OPTIONS), "retries", "price-per-hour", "verbose"]) {
    if (name === "subject" || name === "job-id") continue;
    const value = argv[name];
    if (value === undefined) continue;
    if (typeof value === "boolean") args.push(value ? `--${name}` : `--no-${name}`);
    else if (Array.isArray(value)) for (const item of value) args.push(`--${name}`, String(item));
    else args.push(`--${name}`, String(value));
  }
  return args;
}

/** A hang-up reached us (a closed terminal or ssh session). */
let hungUp = false;

/**
 * End the process with `code`. After a terminal hang-up nobody reads the code, and Node's own exit would abort
 * (SIGABRT, a core dump) restoring the settings of a tty that no longer exists; the driver ends by the hang-up's own
 * signal instead, as a shell's jobs do — after its cleanup, which has run by now.
 */
export function exitProcess(code: number): void {
  if (hungUp && (process.stdin.isTTY || process.stdout.isTTY || process.stderr.isTTY)) {
    process.removeAllListeners("SIGHUP");
    process.kill(process.pid, "SIGHUP");
    return;
  }
  process.stdout.write("", () => process.exit(code));
}

/**
 * A terminal's Ctrl-C can reach the driver more than once: directly (it is in the foreground process group) and again
 * through a parent that forwards signals (tsx does). Copies within this window are one Ctrl-C; only a deliberate
 * second one, later, means "leave now".
 */
const SAME_SIGNAL_WINDOW_MS = 2000;

/** SIGINT/SIGTERM: the first aborts (cancel, destroy, exit 130); the second leaves at once with the cleanup command. */
function interruptController(): AbortController {
  const controller = new AbortController();
  let count = 0;
  let firstAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    // A hang-up may arrive more than once (the kernel signals the session and the group), and the session's manager
    // may follow it with SIGTERM: all the same stop, never "leave now".
    if (count > 0 && (signal === "SIGHUP" || hungUp)) return;
    if (signal === "SIGHUP") hungUp = true;
    if (count > 0 && Date.now() - firstAt < SAME_SIGNAL_WINDOW_MS) return;
    count++;
    if (count === 1) {
      firstAt = Date.now();
      // Abort first: after a hang-up the terminal is gone and the write below only fails.
      controller.abort();
      // A batch's engine worker is stopped by its batch (Ctrl-C there, or `cancel <job>`): no keys to press here.
      process.stderr.write(process.env.CLOUDCOMPUTE_WORKER === "1" ? "stopping: cancelling the update if one runs and destroying the job's resources\n" : `\n${signal}: stopping — cancelling the update if one runs and destroying the job's resources (again to leave at once)\n`);
      return;
    }
    const jobs = [...(loadedRun?.activeJobs ?? [])];
    process.stderr.write(
      `\nleaving now. ${jobs.length > 0 ? `Resources may remain; clean up with:\n${jobs.map((j) => `  npm run job -- cancel ${j}`).join("\n")}\n` : ""}`,
    );
    exitProcess(ExitCode.interrupted);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // A closed terminal or ssh session: the same clean stop as Ctrl-C, not an exit that leaves the instance running.
  process.on("SIGHUP", onSignal);
  return controller;
}

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, process.stdout.isTTY ? 2 : undefined) + "\n");
}

/**
 * What the user typed for a number flag: yargs has already turned "abc" into NaN, which says nothing. Read from the
 * command line (`--flag X` or `--flag=X`); a batch worker's flags come from its environment, so NaN stays there.
 */
function typedValue(flag: string, value: unknown, args: readonly string[] = process.argv.slice(2)): string {
  if (typeof value === "number" && !Number.isNaN(value)) return String(value);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${flag}` && i + 1 < args.length) return JSON.stringify(args[i + 1]);
    if (args[i].startsWith(`--${flag}=`)) return JSON.stringify(args[i].slice(flag.length + 3));
  }
  return String(value);
}

/** Run flags are checked whether or not the mode they belong to is in use: a typo must not pass silently. */
function checkRunFlags(argv: Record<string, unknown>): void {
  for (const [flag, option] of Object.entries(SPEC_OPTIONS)) {
    const value = argv[flag];
    if (value === undefined) continue;
    const many = Boolean(option.array);
    // yargs turns a repeated single-value flag into a list: say so rather than fail somewhere below.
    if (!many && Array.isArray(value)) throw new BadInputError(`--${flag} is given ${value.length} times: give it once`);
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item === "") throw new BadInputError(`--${flag} is empty: give a value, or leave the flag out for the config file's`);
    }
  }
  const wholeNumber = (flag: string, min: number, max: number) => {
    const value = argv[flag];
    if (value === undefined) return;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      throw new BadInputError(`--${flag} ${typedValue(flag, value)}: expected a whole number from ${min} to ${max}`);
    }
  };
  wholeNumber("retries", 0, 10);
  wholeNumber("concurrency", 1, 10_000);
  wholeNumber("engine-concurrency", 1, 64);
  const price = argv["price-per-hour"];
  if (price !== undefined && (typeof price !== "number" || !Number.isFinite(price) || price < 0)) {
    throw new BadInputError(`--price-per-hour ${typedValue("price-per-hour", price)}: expected USD per hour, a number >= 0`);
  }
  for (const flag of ["expected-minutes", "time-budget"]) {
    const value = argv[flag];
    if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value <= 0)) throw new BadInputError(`--${flag} ${typedValue(flag, value)}: expected minutes, a number > 0`);
  }
  const minutes = argv["expected-minutes"];
  if (minutes !== undefined && !argv["dry-run"]) throw new BadInputError("--expected-minutes is for --dry-run's cost estimate: add --dry-run");
  for (const flag of ALL_KEYS.filter((entry) => entry.flag.form === "number").map((entry) => entry.flag.name)) {
    const value = argv[flag];
    if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value))) throw new BadInputError(`--${flag} ${typedValue(flag, value)}: expected a number`);
  }
}

async function runCommand(argv: Record<string, unknown>): Promise<number> {
  checkRunFlags(argv);
  const flags: SpecFlags = argv;
  const json = Boolean(argv.json);
  if (argv.compare !== undefined || argv.subjects !== undefined || argv.wide !== undefined) {
    // Loaded here so that a second Ctrl-C's "leave now" can name every type's job (run.ts's activeJobs).
    runModule();
    return (require("./compare") as typeof import("./compare")).runCompareCommand(argv, flags, { signal: () => interruptController().signal, printJson });
  }
  if (argv["subjects-file"] !== undefined || argv["all-subjects"]) {
    const { runBatchCommand } = batchCommand();
    return runBatchCommand(argv, flags, { workerArgs: workerArgs(argv), signal: () => interruptController().signal, printJson });
  }
  if (argv["engine-worker"]) {
    if (process.env.CLOUDCOMPUTE_WORKER !== "1") throw new BadInputError("--engine-worker is for a batch's engine workers; run a batch with --subjects-file");
    const { engineWorkerMain } = require("./engine-worker") as typeof import("./engine-worker");
    return engineWorkerMain(flags, interruptController().signal, printJson);
  }
  if (argv[SUBJECT_INPUTS_FLAG] !== undefined && process.env.CLOUDCOMPUTE_WORKER !== "1") {
    throw new BadInputError(`--${SUBJECT_INPUTS_FLAG} is for batch workers; use --subjects-file with input columns`);
  }
  const { resolvePackageJob } = require("./nda-package") as typeof import("./nda-package");
  const { inputSignerFor } = require("./input-signing") as typeof import("./input-signing");
  const { checkRegions, printJobNotes, printWarnings } = batchCommand();
  const { RegionCache } = require("./regions") as typeof import("./regions");
  const { runJobWithRetries } = runModule();
  const { jobSummary } = require("./summary") as typeof import("./summary");
  const { capacityFor } = require("./quota-reads") as typeof import("./quota-reads");
  const { checkJobFits, quotaWarnings } = require("./quotas") as typeof import("./quotas");
  const rowInputs = argv[SUBJECT_INPUTS_FLAG] === undefined ? undefined : (JSON.parse(String(argv[SUBJECT_INPUTS_FLAG])) as { urls: Record<string, string>; where: string });
  const extra = rowInputs ? { inputOverrides: rowInputs } : {};
  const resolved = await resolvePackageJob(flags, {}, extra, await inputSignerFor(flags)).catch(async (err: unknown) => {
    // A refused dry run still answers what the instance would cost (it depends on nothing refused); exit 2 stands.
    const minutes = argv["expected-minutes"] as number | undefined;
    const request = { expectedMinutes: minutes!, pricePerHour: argv["price-per-hour"] as number | undefined };
    if (err instanceof BadInputError && minutes !== undefined) await (require("./dry-run") as typeof import("./dry-run")).showRefusedEstimate(flags, err, request, json, printJson);
    throw err;
  });
  printJobNotes(resolved);
  // A batch's parent checked every subject's regions (one lookup per bucket) before starting its workers.
  if (!argv["dry-run"] && process.env.CLOUDCOMPUTE_WORKER !== "1") printWarnings(await checkRegions(resolved, new RegionCache()));
  // Quotas before anything exists (aws): a job that cannot fit is refused, an unreadable quota only warned about. A
  // batch's parent weighed them for all its workers.
  const quotas = process.env.CLOUDCOMPUTE_WORKER === "1" ? undefined : await capacityFor(resolved);
  if (quotas) {
    printWarnings(quotaWarnings(quotas));
    checkJobFits(quotas);
  }
  if (argv["dry-run"]) {
    const { showDryRun } = require("./dry-run") as typeof import("./dry-run");
    return showDryRun(resolved, { quotas, expectedMinutes: argv["expected-minutes"] as number | undefined, pricePerHour: argv["price-per-hour"] as number | undefined, json, printJson, warn: (line) => printWarnings([line]) });
  }
  const result = await runJobWithRetries(resolved, {
    retries: Number(argv.retries ?? 0),
    pricePerHour: argv["price-per-hour"] as number | undefined,
    verbose: Boolean(argv.verbose),
    signal: interruptController().signal,
    // A retry's presigned URLs are asked for (NDA) or signed (--input-profile) again: the first ones may be near their end.
    freshInputs: async () => (await resolvePackageJob(flags, {}, extra, await inputSignerFor(flags))).spec.inputs,
  });
  process.stderr.write(jobSummary(result));
  if (json) printJson(resolved.instanceTypeChoice ? { ...result, instanceTypeChoice: resolved.instanceTypeChoice } : result);
  return result.exitCode;
}

/** The commands besides `run`, as the usage line names them and a mistyped one is matched against. */
const INSPECT_COMMANDS = ["status", "logs", "history", "list", "cancel", "gc"];

/** yargs' "Unknown argument: grca" with the flag that was probably meant, as a mistyped config key gets. */
function withFlagSuggestions(message: string): string {
  const unknown = /^Unknown arguments?: (.*)$/.exec(message);
  if (!unknown) return message;
  const known = [...Object.keys(SPEC_OPTIONS), ...Object.keys(RUN_OPTIONS), "help"];
  const commands = ["run", ...INSPECT_COMMANDS];
  // Loaded only here: job/config brings zod, which a correct command line need not pay for at start.
  const { editDistance } = require("../job/config") as typeof import("../job/config");
  const hints = unknown[1].split(", ").flatMap((name) => {
    const near = known.filter((flag) => editDistance(flag, name.replace(/^-+/, "")) <= 2);
    if (near.length > 0) return [`--${name}: did you mean ${near.map((flag) => `--${flag}`).join(" or ")}?`];
    const nearCommand = commands.filter((command) => editDistance(command, name) <= Math.min(2, command.length - 1));
    return nearCommand.length > 0 ? [`${name}: did you mean the command ${nearCommand.join(" or ")}?`] : [];
  });
  return hints.length > 0 ? `${message} (${hints.join("; ")})` : `${message} (see --help for the flags)`;
}

export function buildParser(args: string[]): Argv {
  let exitCode: number = ExitCode.ok;
  const parser = yargs(args)
    .scriptName("cloudcompute")
    .usage(
      "$0 [run] --subject ID [options]     run one job and wait for it\n" +
        "$0 --subjects-file FILE [options]   run a batch\n" +
        "$0 --all-subjects --manifest FILE   run a batch of every subject the manifest holds\n" +
        "$0 --all-subjects --nda-package ID  the same from an NDA data package's own manifest\n" +
        `$0 <${INSPECT_COMMANDS.join("|")}>  inspect and clean up\n\n` +
        "The job comes from a Pulumi.<stack>.yaml-style config file (--config, default Pulumi.dev.yaml), overridden by flags.",
    )
    .command(["run", "$0"], "Run one job (or a batch with --subjects-file) to the end and destroy its resources", (y) => y.options({ ...SPEC_OPTIONS, ...RUN_OPTIONS }), async (argv) => {
      exitCode = await runCommand(argv as Record<string, unknown>);
    })
    .command("status [job]", "Show a job's state and the agent's latest status (default: the latest job)", (y) => y.positional("job", { type: "string" }).option("json", { type: "boolean", default: false }), async (argv) => {
      const { formatStatus, jobStatus } = inspect();
      const report = await jobStatus(argv.job);
      if (argv.json) printJson(report);
      else process.stdout.write(formatStatus(report));
    })
    .command("logs [job]", "Print the agent's log from S3 (default: the latest job)", (y) => y.positional("job", { type: "string" }).option("follow", { alias: "f", type: "boolean", default: false, describe: "Keep printing until the job ends" }), async (argv) => {
      const { printLogs } = commands();
      await printLogs(argv.job, Boolean(argv.follow), process.stdout, interruptController().signal);
    })
    .command("list", "List jobs: subject, start, end, outcome, cost", (y) => y.options({ json: { type: "boolean", default: false }, stacks: { type: "boolean", default: false, describe: "Also list the backend's stacks (slow on big backends)" }, backend: BACKEND_OPTION, ...LIST_FILTERS }), async (argv) => {
      const { jobFilter, listJobs } = inspect();
      const jobs = listJobs(jobFilter(argv));
      const stacks = argv.stacks ? await commands().backendStacks(argv.backend) : undefined;
      if (argv.json) printJson(stacks ? { jobs, stacks } : jobs);
      else {
        process.stdout.write((require("./summary") as typeof import("./summary")).jobListTable(jobs));
        if (stacks) process.stdout.write(stacks.map((s) => `stack ${s.name}: ${s.resourceCount ?? "?"} resources, updated ${s.lastUpdate ?? "?"}`).join("\n") + "\n");
      }
    })
    .command("history [job]", "Show a job's stack history (every up, refresh and destroy), its audit trail (default: the latest job)", (y) => y.positional("job", { type: "string" }).options({ json: { type: "boolean", default: false }, backend: BACKEND_OPTION }), async (argv) => {
      const { formatHistory, jobHistory } = commands();
      const { jobId, entries } = await jobHistory(argv.job, argv.backend as string | undefined);
      if (argv.json) printJson(entries);
      else process.stdout.write(formatHistory(jobId, entries));
    })
    .command("cancel <job>", "Stop a job: interrupt its driver, or clear the stack's lock and destroy its resources", (y) => y.positional("job", { type: "string", demandOption: true }).option("backend", BACKEND_OPTION), async (argv) => {
      const { cancelJob } = commands();
      await cancelJob(argv.job, (line) => process.stderr.write(`${line}\n`), argv.backend);
    })
    .command("gc", "Destroy stacks holding resources whose driver is gone; report cloudcompute instances no stack owns", (y) => y.options({ "dry-run": { type: "boolean", default: false }, aws: { type: "boolean", default: false, describe: "Also look for orphaned EC2 instances (needs AWS credentials)" }, json: { type: "boolean", default: false }, backend: BACKEND_OPTION }), async (argv) => {
      const { gc } = commands();
      const report = await gc({ dryRun: Boolean(argv["dry-run"]), aws: Boolean(argv.aws), backend: argv.backend, log: (line) => process.stderr.write(`${line}\n`) });
      if (argv.json) printJson(report);
      else process.stderr.write(`gc: ${report.destroyed.length} stack(s) ${argv["dry-run"] ? "to destroy" : "destroyed"}, ${report.failed.length} failed, ${report.leftAlone.length} left alone (owner not provably gone), ${report.orphans.length} orphaned instance(s), ${report.localDataRemoved.length} local job(s) whose data ${argv["dry-run"] ? "would be" : "was"} deleted\n`);
      if (report.failed.length > 0) exitCode = ExitCode.infra;
    })
    .epilogue(
      "Exit codes: 0 succeeded, 1 job failed, 2 bad input (nothing created), 3 infrastructure error, 130 interrupted.\n" +
        "Environment: PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE (default empty), CLOUDCOMPUTE_HOME (default ~/.cloudcompute), AWS_ENDPOINT_URL.\n" +
        "The Pulumi CLI >= 3.248 must be on PATH or built by scripts/pulumi-cli.sh.",
    )
    .strict()
    .help()
    .alias("h", "help")
    .version(false)
    .wrap(Math.min(120, process.stdout.columns || 100))
    .fail((message, err) => {
      throw err ?? new BadInputError(withFlagSuggestions(message));
    });
  return Object.assign(parser, { exitCode: () => exitCode });
}

/**
 * The AWS SDK warns on every start that future versions need Node 22; on Node 20 (which @pulumi/pulumi 3.248 needs)
 * that says nothing about the run. Other warnings are still printed.
 */
function quietSdkNodeWarning(): void {
  process.removeAllListeners("warning");
  process.on("warning", (warning) => {
    if (warning.name !== "NodeVersionSupportWarning") process.stderr.write(`${warning.name}: ${warning.message}\n`);
  });
}

/**
 * Output to a reader that is gone must not kill the driver mid-job: a batch parent killed or a closed pipe (EPIPE),
 * a closed terminal or ssh session (EIO on the tty). Any error of our own stdout/stderr would otherwise end the
 * driver before it destroys what it created, so such writes are dropped: nothing is left to read them.
 */
function surviveClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => undefined);
}

export async function main(args: string[] = hideBin(process.argv)): Promise<number> {
  // A batch worker's job flags come through its environment (driver/batch.ts); taken out at once, so the engine
  // and the agent it starts never inherit them.
  const forwarded = process.env[WORKER_ARGS_ENV];
  if (forwarded !== undefined) {
    delete process.env[WORKER_ARGS_ENV];
    args = [...args, ...(JSON.parse(forwarded) as string[])];
  }
  surviveClosedOutput();
  silenceAwsSdkNodeNotice();
  quietSdkNodeWarning();
  const parser = buildParser(args) as Argv & { exitCode(): number };
  try {
    await parser.parseAsync();
    return parser.exitCode();
  } catch (err) {
    const code = err instanceof DriverError ? err.exitCode : ExitCode.infra;
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    if (!(err instanceof DriverError) && process.env.CLOUDCOMPUTE_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return code;
  }
}

if (require.main === module) {
  main().then((code) => {
    // Open sockets (S3 keep-alive) must not hold the process; flush stdout first.
    exitProcess(code);
  });
}
