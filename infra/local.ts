/**
 * `LocalJob`: the `--platform local` stand-in for the EC2 instance. A Pulumi dynamic resource whose create starts the
 * agent as a detached local process and whose delete stops it, so a local job goes through exactly the same stack
 * lifecycle (up, wait for the marker, refresh, destroy, history) as an AWS job.
 *
 * The provider functions are serialised into the state and run inside the dynamic-provider plugin, which inherits
 * the driver's environment (S3 endpoint and credentials). They must be self-contained: they require what they use
 * and never capture credentials, which therefore stay out of the state.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { JobSpec } from "../job/spec";
import { CONTAINER_NAME_PREFIX, isJobId, markerUrl, WORKDIR_NAMES } from "../job/layout";
import { cloudcomputeHome } from "../common/paths";

// Plain copies of shared names: the provider's functions are serialised into the state, and a value they use must
// be captured as itself, not through the module that exports it.
const JOB_CONTAINER_PREFIX: string = CONTAINER_NAME_PREFIX;
const SUBJECT_DATA_DIRS: string[] = [WORKDIR_NAMES.inputs, WORKDIR_NAMES.outputs];

export interface LocalJobArgs {
  /** The validated spec (may be a secret output when it holds presigned URLs); only its id and layout are read. */
  spec: pulumi.Input<JobSpec>;
  /** S3 URL of the staged spec.json the agent starts from. */
  specUrl: pulumi.Input<string>;
  /** The agent bundle on this machine (dist/agent.js). */
  agentBundlePath: pulumi.Input<string>;
  /** Directory for the agent's work and log; default `$CLOUDCOMPUTE_HOME/local/<jobId>` (~/.cloudcompute). */
  workDir?: pulumi.Input<string>;
}

/** What the provider stores: nothing secret, so the process can be found and stopped later. */
interface LocalProcessInputs {
  jobId: string;
  /** A new launch (a second `pulumi up` of the stack) is a new agent process. */
  launchId: string;
  specUrl: string;
  agentBundlePath: string;
  workDir: string;
}

interface LocalProcessOutputs extends LocalProcessInputs {
  pid: number;
  /** Kernel start time of the process: tells a recycled pid apart from ours. */
  startFingerprint: string;
  logPath: string;
}

/** `<pid>:<start fingerprint>` — the resource id. */
function parseProcessId(id: string): { pid: number; fingerprint: string } {
  const sep = id.indexOf(":");
  return { pid: Number(id.slice(0, sep)), fingerprint: id.slice(sep + 1) };
}

/**
 * A fingerprint of a running process's identity (its start time), or undefined when no such live process exists.
 * Linux: field 22 of /proc/<pid>/stat (zombies count as gone). Elsewhere: `ps -o lstart=`.
 */
export function processFingerprint(pid: number): string | undefined {
  const fs = require("node:fs") as typeof import("node:fs");
  const childProcess = require("node:child_process") as typeof import("node:child_process");
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (fs.existsSync("/proc/self/stat")) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      return undefined;
    }
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return `proc-${fields[19]}`;
  }
  try {
    const started = childProcess.execFileSync("ps", ["-o", "lstart=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return started ? `ps-${started.replace(/\s+/g, "_")}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The processes below `pid`, found through their parents in /proc (Linux; elsewhere none). The agent may start its
 * job in a process group of its own, which a signal to the agent's group would miss.
 */
export function descendantsOf(pid: number): number[] {
  const fs = require("node:fs") as typeof import("node:fs");
  const children = new Map<number, number[]>();
  let entries: string[] = [];
  try {
    entries = fs.readdirSync("/proc").filter((entry) => /^\d+$/.test(entry));
  } catch {
    return [];
  }
  for (const entry of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      /* exited meanwhile */
    }
  }
  const found: number[] = [];
  const queue = [...(children.get(pid) ?? [])];
  while (queue.length > 0) {
    const next = queue.shift()!;
    found.push(next);
    queue.push(...(children.get(next) ?? []));
  }
  return found;
}

/**
 * Stop the agent and everything it started: SIGTERM (and SIGCONT, so a stopped process acts on it) to the agent's
 * group and to each descendant and its group, then SIGKILL whatever is still there after a grace.
 */
async function stopProcess(pid: number, fingerprint: string): Promise<void> {
  if (processFingerprint(pid) !== fingerprint) return;
  // Collected first: once the agent is gone its children are re-parented and no longer found through it.
  const targets = [pid, ...descendantsOf(pid)].map((p) => ({ pid: p, fingerprint: processFingerprint(p) }));
  const alive = () => targets.filter((t) => t.fingerprint !== undefined && processFingerprint(t.pid) === t.fingerprint);
  const signalAll = (signal: NodeJS.Signals) => {
    for (const target of alive()) {
      for (const id of [-target.pid, target.pid]) {
        try {
          process.kill(id, signal); // -pid: the group it leads, if it leads one
        } catch {
          /* not a group leader, or already gone */
        }
      }
    }
  };
  signalAll("SIGTERM");
  signalAll("SIGCONT");
  const graceMs = Number(process.env.CLOUDCOMPUTE_LOCAL_STOP_GRACE_MS ?? 15000);
  const deadline = Date.now() + graceMs;
  while (alive().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive().length === 0) return;
  signalAll("SIGKILL");
  const killDeadline = Date.now() + 5000;
  while (alive().length > 0 && Date.now() < killDeadline) await new Promise((resolve) => setTimeout(resolve, 50));
  const survivors = alive();
  if (survivors.length > 0) throw new Error(`process(es) ${survivors.map((t) => t.pid).join(", ")} of the agent survived SIGKILL`);
}

/**
 * Remove containers the agent started for this job (named `cloudcompute-<jobId>-...` by job/layout's
 * jobContainerName) that outlived it: a killed container client does not take its container along.
 */
export function removeJobContainers(jobId: string): void {
  const childProcess = require("node:child_process") as typeof import("node:child_process");
  for (const runtime of ["podman", "docker"]) {
    let ids: string[];
    try {
      // The filter is a regular expression: a '.' in the job id must match only itself, not another job's name.
      const name = `^${JOB_CONTAINER_PREFIX}${jobId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-`;
      const listed = childProcess.execFileSync(runtime, ["ps", "-aq", "--filter", `name=${name}`], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 30_000,
      });
      ids = listed.split(/\s+/).filter(Boolean);
    } catch {
      continue; // runtime not installed (or its service not running): nothing of ours there
    }
    if (ids.length > 0) childProcess.execFileSync(runtime, ["rm", "-f", ...ids], { stdio: "ignore", timeout: 60_000 });
  }
}

/**
 * The subject's data (often controlled-access) must not linger in the user's home, as it does not outlive an
 * instance: inputs and outputs go with the job; the agent's logs stay for `logs` and the audit trail.
 */
function removeSubjectData(workDir: string): void {
  const fs = require("node:fs") as typeof import("node:fs");
  const pathModule = require("node:path") as typeof import("node:path");
  for (const dir of SUBJECT_DATA_DIRS) fs.rmSync(pathModule.join(workDir, dir), { recursive: true, force: true });
}

const localProcessProvider: pulumi.dynamic.ResourceProvider<LocalProcessInputs, LocalProcessOutputs> = {
  async create(inputs) {
    const fs = require("node:fs") as typeof import("node:fs");
    const childProcess = require("node:child_process") as typeof import("node:child_process");
    const pathModule = require("node:path") as typeof import("node:path");
    if (!fs.existsSync(inputs.agentBundlePath)) {
      throw new Error(`agent bundle ${inputs.agentBundlePath} does not exist: run 'npm run build:agent'`);
    }
    fs.mkdirSync(inputs.workDir, { recursive: true });
    const logPath = pathModule.join(inputs.workDir, "agent.out");
    const log = fs.openSync(logPath, "a");
    const child = childProcess.spawn(
      process.execPath,
      [inputs.agentBundlePath, "--spec", inputs.specUrl, "--no-poweroff", "--workdir", inputs.workDir],
      {
        cwd: inputs.workDir,
        detached: true, // its own session: outlives this plugin process, and its group can be signalled as a whole
        stdio: ["ignore", log, log],
        // The agent needs the S3 endpoint and credentials; never the passphrase that decrypts every stack's secrets
        // (a job's command, a process of the same user, could read it from /proc/<agent>/environ), nor NDA's password.
        env: Object.fromEntries(
          Object.entries({ ...process.env, CLOUDCOMPUTE_POWEROFF: "0" }).filter(([name]) => !/^(PULUMI_(CONFIG_PASSPHRASE|CONFIG_PASSPHRASE_FILE|ACCESS_TOKEN)|NDA_(USERNAME|PASSWORD))$/.test(name)),
        ),
      },
    );
    fs.closeSync(log);
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new Error(`could not start the agent: ${err.message}`)));
      child.once("spawn", () => resolve(child.pid!));
    });
    child.unref();
    // The agent may legitimately finish at once (a fast failure writes its marker and exits): then there is nothing
    // left to stop, and the fingerprint "exited" matches no process.
    const startFingerprint = processFingerprint(pid) ?? "exited";
    // The local counterpart of an EC2 tag: if the engine dies before it records this create, the driver's teardown
    // still finds the process through this file (reclaimLocalAgent) instead of leaving it running.
    fs.writeFileSync(pathModule.join(inputs.workDir, "agent.pid"), `${pid}:${startFingerprint}\n`);
    const outs: LocalProcessOutputs = { ...inputs, pid, startFingerprint, logPath };
    return { id: `${pid}:${startFingerprint}`, outs };
  },

  // Refresh: a process that has ended is gone, as a self-terminated instance is for the AWS provider.
  async read(id, props) {
    const { pid, fingerprint } = parseProcessId(id);
    return processFingerprint(pid) === fingerprint ? { id, props } : {};
  },

  async diff(_id, olds, news) {
    const changed = (["jobId", "launchId", "specUrl", "agentBundlePath", "workDir"] as const).filter((key) => olds[key] !== news[key]);
    return { changes: changed.length > 0, replaces: changed, deleteBeforeReplace: true };
  },

  async delete(id, props) {
    const { pid, fingerprint } = parseProcessId(id);
    await stopProcess(pid, fingerprint);
    removeJobContainers(props.jobId);
    removeSubjectData(props.workDir);
  },
};

class LocalProcess extends pulumi.dynamic.Resource {
  declare readonly pid: pulumi.Output<number>;
  declare readonly logPath: pulumi.Output<string>;
  declare readonly workDir: pulumi.Output<string>;

  constructor(name: string, args: pulumi.Inputs, opts?: pulumi.CustomResourceOptions) {
    super(localProcessProvider, name, { ...args, pid: undefined, startFingerprint: undefined, logPath: undefined }, opts);
  }
}

/** Where local jobs work by default: `$CLOUDCOMPUTE_HOME/local/<jobId>` (CLOUDCOMPUTE_HOME defaults to ~/.cloudcompute). */
export function defaultLocalWorkDir(jobId: string): string {
  return path.join(cloudcomputeHome(), "local", jobId);
}

export class LocalJob extends pulumi.ComponentResource {
  /** `local:<pid>:<fingerprint>`: plays the part of the EC2 instance id. */
  readonly instanceId: pulumi.Output<string>;
  readonly markerUrl: pulumi.Output<string>;
  readonly pid: pulumi.Output<number>;
  readonly logPath: pulumi.Output<string>;
  readonly workDir: pulumi.Output<string>;

  constructor(name: string, args: LocalJobArgs, opts?: pulumi.ComponentResourceOptions) {
    super("cloudcompute:job:LocalJob", name, {}, opts);
    // Only non-secret parts of the spec are used; the job id and marker location are not secret.
    const spec = pulumi.unsecret(pulumi.output(args.spec));
    const jobId = spec.apply((s) => s.jobId);
    const launchId = spec.apply((s) => s.launchId ?? "");
    const workDir = args.workDir ?? jobId.apply(defaultLocalWorkDir);
    const proc = new LocalProcess(
      `${name}-agent`,
      { jobId, launchId, specUrl: args.specUrl, agentBundlePath: args.agentBundlePath, workDir },
      { parent: this },
    );
    this.instanceId = proc.id.apply((id) => `local:${id}`);
    this.markerUrl = spec.apply((s) => markerUrl(s));
    this.pid = proc.pid;
    this.logPath = proc.logPath;
    this.workDir = proc.workDir;
    this.registerOutputs({ instanceId: this.instanceId, markerUrl: this.markerUrl });
  }
}

/**
 * After the job's stack is destroyed: stop a local agent the state did not hold (its create was cut off before the
 * engine recorded it), found through the `agent.pid` its create wrote in the work dir, and remove the subject's data
 * whichever way the destroy went (an engine killed mid-destroy never ran the delete). Returns what it stopped.
 */
export async function reclaimLocalAgent(workDir: string, jobId: string): Promise<string | undefined> {
  const fs = require("node:fs") as typeof import("node:fs");
  let stopped: string | undefined;
  let id: string | undefined;
  try {
    id = fs.readFileSync(path.join(workDir, "agent.pid"), "utf8").trim();
  } catch {
    /* no agent was ever started here */
  }
  if (id) {
    const { pid, fingerprint } = parseProcessId(id);
    if (processFingerprint(pid) === fingerprint) {
      await stopProcess(pid, fingerprint);
      removeJobContainers(jobId);
      stopped = `local agent process ${pid}`;
    }
  }
  removeSubjectData(workDir);
  return stopped;
}

/**
 * Local work directories still holding a subject's inputs or outputs although no agent runs there (a job that ended
 * before destroy removed them, or an older version that kept them): `gc` deletes their data, keeping the logs. Only
 * real directories named like a job are looked at (a symlink may lead anywhere); a directory that cannot be emptied
 * (files a root container wrote) is reported, never a reason to stop.
 */
export function staleLocalData(skip: ReadonlySet<string>, remove: boolean): { found: string[]; failed: Array<{ jobId: string; error: string }> } {
  const fs = require("node:fs") as typeof import("node:fs");
  const root = path.join(cloudcomputeHome(), "local");
  const found: string[] = [];
  const failed: Array<{ jobId: string; error: string }> = [];
  for (const entry of fs.existsSync(root) ? fs.readdirSync(root, { withFileTypes: true }) : []) {
    const jobId = entry.name;
    if (skip.has(jobId) || !isJobId(jobId) || !entry.isDirectory()) continue;
    const workDir = path.join(root, jobId);
    if (!["inputs", "outputs"].some((dir) => fs.existsSync(path.join(workDir, dir)))) continue;
    if (agentRunsIn(workDir)) continue;
    try {
      if (remove) removeSubjectData(workDir);
      found.push(jobId);
    } catch (err) {
      failed.push({ jobId, error: (err as Error).message });
    }
  }
  return { found, failed };
}

/** Is an agent recorded in `workDir/agent.pid` still running? Only a small regular file is read (a FIFO would block). */
function agentRunsIn(workDir: string): boolean {
  const fs = require("node:fs") as typeof import("node:fs");
  const pidFile = path.join(workDir, "agent.pid");
  const stat = fs.lstatSync(pidFile, { throwIfNoEntry: false });
  if (!stat) return false;
  // Anything odd in place of the pid file: assume an agent may run, and leave the data alone.
  if (!stat.isFile() || stat.size > 512) return true;
  return localJobAlive(fs.readFileSync(pidFile, "utf8").trim());
}

/** Is the agent behind a LocalJob instance id (`local:<pid>:<fingerprint>`) still running? */
export function localJobAlive(instanceId: string): boolean {
  const { pid, fingerprint } = parseProcessId(instanceId.replace(/^local:/, ""));
  return processFingerprint(pid) === fingerprint;
}
