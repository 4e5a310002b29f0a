/**
 * The Pulumi engine through the Automation API: finding the CLI, the environment every stack operation gets, and
 * opening a job's stack in its own workspace.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { processStartTime } from "./owner";
import { isJobId } from "../job/layout";
import {
  ConcurrentUpdateError,
  LocalWorkspace,
  PulumiCommand,
  PulumiFn,
  Stack,
  StackAlreadyExistsError,
  StackNotFoundError,
} from "@pulumi/pulumi/automation";
import { errorMessage } from "../common/errors";
import { BadInputError, InfraError } from "./errors";
import { backendUrl, cloudcomputeHome, jobWorkspaceDir, PACKAGE_ROOT } from "../common/paths";
import { writeFileWhole } from "../common/files";

export const PROJECT_NAME = "cloudcompute";
/** The CLI version scripts/pulumi-cli.sh builds, and the lowest the driver accepts. */
export const PULUMI_CLI_VERSION = "3.248.0";

/** Where scripts/pulumi-cli.sh caches the CLI it builds: `<root>/bin/pulumi`. */
export function pulumiCacheRoot(): string {
  const cache = process.env.CLOUDCOMPUTE_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "cloudcompute");
  return path.join(cache, `pulumi-v${PULUMI_CLI_VERSION}`);
}

let pulumiCommand: Promise<PulumiCommand> | undefined;

/** The Pulumi CLI: `pulumi` >= PULUMI_CLI_VERSION on PATH, else the one scripts/pulumi-cli.sh built. */
export function findPulumi(): Promise<PulumiCommand> {
  pulumiCommand ??= (async () => {
    const problems: string[] = [];
    const recentEnough = async (root?: string) => {
      const command = await PulumiCommand.get({ root });
      if (command.version && command.version.compare(PULUMI_CLI_VERSION) < 0) {
        throw new Error(`version ${command.version.version} is older than ${PULUMI_CLI_VERSION}`);
      }
      return command;
    };
    try {
      const onPath = await recentEnough();
      const isolated = isolatedEngineRoot(onPath.command);
      return isolated ? await recentEnough(isolated) : onPath;
    } catch (err) {
      problems.push(`on PATH: ${firstLine(errorMessage(err))}`);
    }
    const root = pulumiCacheRoot();
    if (fs.existsSync(path.join(root, "bin", "pulumi"))) {
      try {
        const built = await recentEnough(root);
        const isolated = isolatedEngineRoot(path.join(root, "bin", "pulumi"));
        return isolated ? await recentEnough(isolated) : built;
      } catch (err) {
        problems.push(`in ${root}/bin: ${firstLine(errorMessage(err))}`);
      }
    } else {
      problems.push(`not built in ${root}/bin`);
    }
    throw new InfraError(
      `the Pulumi CLI >= ${PULUMI_CLI_VERSION} was not found (${problems.join("; ")}).\n` +
        `  Build it (needs Go >= 1.25; cached for later runs):  bash scripts/pulumi-cli.sh\n` +
        `  or install it: https://www.pulumi.com/docs/install/ and put it on PATH.`,
    );
  })();
  pulumiCommand.catch(() => (pulumiCommand = undefined));
  return pulumiCommand;
}

/**
 * A root whose `bin/pulumi` starts the real CLI in a session of its own (setsid). A terminal's Ctrl-C goes to the
 * whole foreground process group: without this the engine gets it directly as well as through the Automation API's
 * abort, quits hard on the second, and can drop a pending create from state while its resource lives on. Isolated,
 * it gets exactly one SIGINT — ours, after the driver has decided to cancel — and the driver's teardown follows.
 * Where setsid is missing (not Linux), the real CLI is used as it is.
 */
function isolatedEngineRoot(pulumiBinary: string): string | undefined {
  const setsid = ["/usr/bin/setsid", "/bin/setsid"].find((candidate) => fs.existsSync(candidate));
  if (!setsid) return undefined;
  const real = pulumiBinary.includes(path.sep) ? pulumiBinary : whichSync(pulumiBinary);
  if (!real) return undefined;
  const root = path.join(cloudcomputeHome(), "engine");
  const wrapper = path.join(root, "bin", "pulumi");
  const script = `#!/bin/sh\n# cloudcompute: the Pulumi CLI in a session of its own (driver/engine.ts)\nexec ${setsid} ${shellQuote(real)} "$@"\n`;
  fs.mkdirSync(path.dirname(wrapper), { recursive: true });
  if (!fs.existsSync(wrapper) || fs.readFileSync(wrapper, "utf8") !== script) {
    writeFileWhole(wrapper, script, { mode: 0o755 });
  }
  return root;
}

function whichSync(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return fs.realpathSync(candidate);
    } catch {
      /* not here */
    }
  }
  return undefined;
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function firstLine(text: string): string {
  return text.split("\n").find((line) => line.trim())?.trim() ?? text;
}

/** The node_modules that holds our @pulumi/pulumi: the dynamic-provider plugin resolves it from NODE_PATH. */
function nodeModulesDir(): string {
  const pkg = require.resolve("@pulumi/pulumi/package.json", { paths: [PACKAGE_ROOT] });
  return path.resolve(path.dirname(pkg), "..", "..");
}

export interface EngineSettings {
  backend?: string;
}

/**
 * Environment for every Pulumi operation. The passphrase secrets provider needs PULUMI_CONFIG_PASSPHRASE even when
 * empty (an unset one fails with "passphrase must be set"): we pass the user's, else "" explicitly.
 */
export function engineEnv(settings: EngineSettings = {}): Record<string, string> {
  const env: Record<string, string> = {
    PULUMI_BACKEND_URL: backendUrl(settings.backend),
    PULUMI_SKIP_UPDATE_CHECK: "true",
    // Inline programs report no required plugins; nothing may be fetched behind our back (and parallel installs
    // into one PULUMI_HOME collide).
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    NODE_PATH: [nodeModulesDir(), process.env.NODE_PATH].filter(Boolean).join(path.delimiter),
    CLOUDCOMPUTE_HOME: cloudcomputeHome(),
  };
  if (!process.env.PULUMI_CONFIG_PASSPHRASE_FILE) env.PULUMI_CONFIG_PASSPHRASE = process.env.PULUMI_CONFIG_PASSPHRASE ?? "";
  const backend = env.PULUMI_BACKEND_URL;
  if (backend.startsWith("file://")) fs.mkdirSync(new URL(backend), { recursive: true });
  return env;
}

const noProgram: PulumiFn = async () => {};

export interface OpenStackOptions extends EngineSettings {
  jobId: string;
  /** The inline program; omit for operations that never run it (destroy, refresh, history, cancel). */
  program?: PulumiFn;
  /** Only select: fail with a clear message when the job's stack does not exist. */
  mustExist?: boolean;
  /** Only create: a stack of this job id already in the backend is refused (an id is never launched twice). */
  mustBeNew?: boolean;
}

/** Open (create or select) a job's stack in the job's own workspace directory. */
export async function openJobStack(options: OpenStackOptions): Promise<Stack> {
  if (!isJobId(options.jobId)) throw new BadInputError(`"${options.jobId}" is not a job id (job-<subject>-<time>, as list shows them)`);
  const workDir = jobWorkspaceDir(options.jobId);
  fs.mkdirSync(workDir, { recursive: true });
  const envVars = engineEnv(options);
  const args = { stackName: options.jobId, projectName: PROJECT_NAME, program: options.program ?? noProgram };
  const wsOptions = {
    workDir,
    envVars,
    pulumiCommand: await findPulumi(),
    projectSettings: { name: PROJECT_NAME, runtime: "nodejs" as const, backend: { url: envVars.PULUMI_BACKEND_URL } },
  };
  try {
    if (options.mustExist) return await LocalWorkspace.selectStack(args, wsOptions);
    if (options.mustBeNew) return await LocalWorkspace.createStack(args, wsOptions);
    return await LocalWorkspace.createOrSelectStack(args, wsOptions);
  } catch (err) {
    if (err instanceof StackNotFoundError) throw new BadInputError(`no job "${options.jobId}" in backend ${envVars.PULUMI_BACKEND_URL}`);
    // A stack of the id that is locked exists too: another driver is working on it right now.
    if (err instanceof StackAlreadyExistsError || (options.mustBeNew && err instanceof ConcurrentUpdateError)) {
      throw new BadInputError(
        `job id "${options.jobId}" already has a stack in ${envVars.PULUMI_BACKEND_URL}: a job id is launched once ` +
          `(its stack is its history). Leave out --job-id for a fresh one, or see the earlier job with  npm run job -- status ${options.jobId}`,
      );
    }
    throw explainEngineError(err, options.jobId);
  }
}

/** Turn engine errors users can act on into messages that say what to do. */
export function explainEngineError(err: unknown, jobId: string): Error {
  if (err instanceof ConcurrentUpdateError) {
    return new InfraError(
      `the stack of job ${jobId} is locked: another update is running, or a killed driver left its lock behind.\n` +
        `  If no driver is working on this job any more, clear the lock and clean up with:\n` +
        `    npm run job -- cancel ${jobId}\n` +
        `  (that runs 'pulumi cancel' on the stack, then refreshes and destroys it).`,
    );
  }
  if (err instanceof InfraError || err instanceof BadInputError) return err;
  const message = errorMessage(err);
  if (/passphrase/i.test(message)) {
    return new InfraError(
      `the stack's secrets could not be decrypted: set PULUMI_CONFIG_PASSPHRASE (or _FILE) to the passphrase the ` +
        `stack was created with (the driver's default is the empty passphrase).\n${tail(message)}`,
    );
  }
  if (/\bVcpuLimitExceeded\b/.test(message)) {
    // The check before launch saw room; another launch in the account took it since.
    return new InfraError(
      `EC2 refused job ${jobId}'s instance: the account's vCPU quota for its class is used up (VcpuLimitExceeded). ` +
        `--dry-run --json shows the quota and what is in use; run fewer jobs at once or ask AWS for more.\n${tail(message)}`,
    );
  }
  return new InfraError(`Pulumi failed for job ${jobId}:\n${tail(message)}`);
}

/** The end of a long engine message, where the diagnostics are. */
function tail(message: string, lines = 25): string {
  return message.split("\n").slice(-lines).join("\n");
}

/** How many resources the stack still holds (0 after a complete destroy). */
export async function resourceCount(stack: Stack): Promise<number> {
  const state = await stack.exportStack();
  const deployment = state.deployment as { resources?: unknown[] } | undefined;
  return deployment?.resources?.length ?? 0;
}

/**
 * The pid of a live Pulumi process on this host that holds the stack's lock (file backends: the lock files hold
 * the locking process's pid and host), or undefined.
 */
export function liveEngineHolding(backend: string, jobId: string): number | undefined {
  if (!backend.startsWith("file:")) return undefined;
  let root: string;
  try {
    root = fileURLToPath(backend.split("?")[0]);
  } catch {
    root = backend.replace(/^file:\/\//, "").replace(/^~(?=\/|$)/, os.homedir()).split("?")[0]; // file://~/… as Pulumi writes it
  }
  const dir = path.join(root, ".pulumi", "locks", "organization", PROJECT_NAME, jobId);
  let files: string[] = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith(".json"));
  } catch {
    return undefined;
  }
  for (const file of files) {
    try {
      const lock = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as { pid?: number; hostname?: string };
      if (!lock.pid || lock.hostname !== os.hostname() || processStartTime(lock.pid) === undefined) continue;
      // A reused pid is some other program: only a pulumi process can still be working on the stack.
      const argv = fs.readFileSync(`/proc/${lock.pid}/cmdline`, "utf8").split("\0");
      if (path.basename(argv[0] ?? "") === "pulumi") return lock.pid;
    } catch {
      /* released meanwhile */
    }
  }
  return undefined;
}

/** Wait (up to `timeoutMs`) while a live engine on this host still works on the job's stack: tearing down under it would race its update. */
export async function engineLetGo(backend: string, jobId: string, log: (line: string) => void, timeoutMs = 15 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let said = false;
  for (let pid = liveEngineHolding(backend, jobId); pid !== undefined && Date.now() < deadline; pid = liveEngineHolding(backend, jobId)) {
    if (!said) log(`the Pulumi engine (pid ${pid}) still works on ${jobId}: waiting for it to finish before destroying`);
    said = true;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
