/**
 * Containers: pull an image and run a command in it with docker, podman or apptainer, or as a plain host process
 * (runtime "none"). Inputs are bind-mounted read-only, the output directory read-write; stdout/stderr go to the log.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ContainerRuntime } from "../job/spec";
import { errorMessage } from "../common/errors";
import { JobFailure } from "./errors";

export interface Mount {
  host: string;
  container: string;
  readOnly?: boolean;
}

export interface ProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The last few KiB of stdout+stderr, for error messages. */
  tail: string;
}

interface ProcessOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Receives stdout and stderr (not ended by us). */
  output?: Writable;
  signal?: AbortSignal;
  /** Own process group, so a kill reaches the whole tree (host processes, apptainer). */
  detached?: boolean;
  onSpawn?: (pid: number | undefined) => void;
}

const TAIL_BYTES = 8192;

/** Run a program to completion; rejects only when it cannot be started. */
export function runProcess(program: string, args: string[], opts: ProcessOptions = {}): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ["ignore", "pipe", "pipe"],
      detached: opts.detached,
    });
    let tail = "";
    const collect = (chunk: Buffer) => {
      opts.output?.write(chunk);
      tail = (tail + chunk.toString("utf8")).slice(-TAIL_BYTES);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const onAbort = () => killTree(child.pid, opts.detached === true, "SIGTERM");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.once("spawn", () => opts.onSpawn?.(child.pid));
    child.once("error", (err) => {
      opts.signal?.removeEventListener("abort", onAbort);
      reject(err);
    });
    child.once("close", (exitCode, signal) => {
      opts.signal?.removeEventListener("abort", onAbort);
      resolve({ exitCode, signal, tail });
    });
  });
}

function killTree(pid: number | undefined, group: boolean, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // already gone
  }
}

/** The CLI program for a runtime. */
export function runtimeProgram(runtime: ContainerRuntime): string {
  if (runtime === "none") throw new Error('runtime "none" has no container program');
  return runtime;
}

/** The registry host of an image reference, if it names one (`host[:port]/repo`). */
export function registryHost(image: string): string | undefined {
  const first = image.split("/")[0];
  if (!image.includes("/") || !(first.includes(".") || first.includes(":") || first === "localhost")) return undefined;
  return first;
}

/** Local registries (tests, a cache on the instance) speak plain HTTP; docker allows that for 127.0.0.0/8 itself. */
export function isLoopbackRegistry(image: string): boolean {
  const host = registryHost(image)?.replace(/:\d+$/, "");
  return host === "localhost" || host === "[::1]" || (host !== undefined && /^127\.\d+\.\d+\.\d+$/.test(host));
}

export interface PullImageOptions {
  runtime: ContainerRuntime;
  image: string;
  /** Where apptainer keeps the SIF file. */
  workdir?: string;
  signal?: AbortSignal;
  /** Pull progress goes here (the job log). */
  output?: Writable;
}

export interface PulledImage {
  runtime: ContainerRuntime;
  reference: string;
  /** Registry digest (`sha256:...`); for apptainer the SIF file's hash (`sif-sha256:...`). */
  digest?: string;
  /** What to hand to `run`: the reference, or the SIF path for apptainer. */
  runRef: string;
}

/** Pull `image`; fails with JobFailure "image-pull-failed" (the process's last output in the message). */
export async function pullImage(opts: PullImageOptions): Promise<PulledImage> {
  const { runtime, image } = opts;
  if (runtime === "none") return { runtime, reference: image, runRef: image };
  const program = runtimeProgram(runtime);
  let args: string[];
  let runRef = image;
  if (runtime === "apptainer") {
    runRef = path.join(opts.workdir ?? process.cwd(), "image.sif");
    const source = image.includes("://") ? image : `docker://${image}`;
    args = ["pull", "--force", ...(isLoopbackRegistry(image) ? ["--no-https"] : []), runRef, source];
  } else {
    args = ["pull", ...(runtime === "podman" && isLoopbackRegistry(image) ? ["--tls-verify=false"] : []), image];
  }
  let result: ProcessResult;
  try {
    result = await runProcess(program, args, { output: opts.output, signal: opts.signal });
  } catch (err) {
    throw new JobFailure("image-pull-failed", `cannot run ${program} to pull ${image}: ${errorMessage(err)}`, "pull");
  }
  if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("pull aborted");
  if (result.exitCode !== 0) {
    const last = result.tail.trim().split("\n").slice(-3).join(" | ");
    throw new JobFailure("image-pull-failed", `${program} pull ${image} failed (exit ${result.exitCode ?? result.signal}): ${last}`, "pull");
  }
  const digest = runtime === "apptainer" ? `sif-sha256:${await fileSha256(runRef)}` : await imageDigest(runtime, image);
  return { runtime, reference: image, digest, runRef };
}

async function fileSha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(file), hash);
  return hash.digest("hex");
}

function repositoryOf(reference: string): string {
  const withoutDigest = reference.split("@")[0];
  const lastSlash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.lastIndexOf(":");
  return colon > lastSlash ? withoutDigest.slice(0, colon) : withoutDigest;
}

/** The registry digest of a local image: the RepoDigest of its own repository, else podman's `.Digest`. */
export async function imageDigest(runtime: "docker" | "podman", image: string): Promise<string | undefined> {
  const inspect = await runProcess(runtime, ["image", "inspect", "--format", "{{json .RepoDigests}}", image]).catch(() => undefined);
  if (inspect?.exitCode === 0) {
    try {
      const digests = (JSON.parse(inspect.tail.trim()) as string[] | null) ?? [];
      const repo = repositoryOf(image).replace(/^docker\.io\/(library\/)?/, "");
      const own = digests.find((d) => repositoryOf(d).replace(/^docker\.io\/(library\/)?/, "") === repo);
      const chosen = own ?? digests[0];
      if (chosen) return chosen.slice(chosen.indexOf("@") + 1);
    } catch {
      // fall through
    }
  }
  if (runtime === "podman") {
    const plain = await runProcess(runtime, ["image", "inspect", "--format", "{{.Digest}}", image]).catch(() => undefined);
    const value = plain?.exitCode === 0 ? plain.tail.trim() : "";
    if (/^sha256:[0-9a-f]{64}$/.test(value)) return value;
  }
  return undefined;
}

export interface RunContainerOptions {
  runtime: ContainerRuntime;
  /** Image reference, or SIF path for apptainer; ignored for "none". */
  image: string;
  command: string[];
  entrypoint?: string;
  env?: Record<string, string>;
  gpus?: number;
  /** `none` (the default): no network at all; `bridge`: the runtime's default network. */
  network?: "none" | "bridge";
  mounts?: Mount[];
  /** Working directory inside the container, or on the host for "none". */
  workdir: string;
  /** Container name (docker/podman), so it can be killed; made up if absent. */
  name?: string;
  /** stdout and stderr of the job. */
  output?: Writable;
  /** Kill the job at this time (epoch ms) and report `timedOut`. */
  deadline?: number;
  signal?: AbortSignal;
  /** Grace between SIGTERM and SIGKILL (default 10 s). */
  killGraceMs?: number;
}

export interface RunResult extends ProcessResult {
  timedOut: boolean;
  seconds: number;
  /** The exact program and arguments run (values of env vars are not in it). */
  argv: string[];
}

/**
 * Program and arguments for one run, and the environment to give the CLI. Env values never appear in argv, and
 * never become the docker/podman CLI's own environment (a spec's PATH, DOCKER_HOST or LD_PRELOAD would change what
 * the CLI does): they go through `envFile`, which the caller writes with `envFileText` and removes.
 */
export function containerInvocation(opts: RunContainerOptions & { name: string; envFile?: string }): { program: string; args: string[]; env: NodeJS.ProcessEnv } {
  const env = opts.env ?? {};
  const mounts = opts.mounts ?? [];
  const gpus = opts.gpus ?? 0;
  const isolated = (opts.network ?? "none") === "none";
  if (opts.runtime === "none") {
    const [program, ...args] = opts.entrypoint ? [opts.entrypoint, ...opts.command] : opts.command;
    if (!program) throw new JobFailure("container-failed", 'runtime "none" needs a command (or entrypoint) to run', "run");
    // A host process: it gets the basics of the agent's environment, never its credentials or the Pulumi passphrase.
    return { program, args, env: { ...hostBasics(process.env), ...env } };
  }
  if (opts.runtime === "apptainer") {
    // --containall: own PID/IPC namespaces, no host $HOME or /tmp; --no-privs: root in the image keeps no capabilities
    // (it could otherwise stop the watchdog); --net --network none: no network, not even the instance's metadata.
    const args = [opts.entrypoint ? "exec" : "run", "--containall", "--cleanenv", "--no-privs", ...(isolated ? ["--net", "--network", "none"] : []), "--pwd", opts.workdir];
    for (const m of mounts) args.push("--bind", `${m.host}:${m.container}${m.readOnly ? ":ro" : ""}`);
    if (gpus > 0) args.push("--nv");
    args.push(opts.image, ...(opts.entrypoint ? [opts.entrypoint] : []), ...opts.command);
    // apptainer passes APPTAINERENV_X into the container as X, even with --cleanenv.
    const passed = Object.fromEntries(Object.entries(env).map(([k, v]) => [`APPTAINERENV_${k}`, v]));
    return { program: "apptainer", args, env: { ...process.env, ...passed } };
  }
  const args = ["run", "--rm", "--name", opts.name, "--pull=never", ...(isolated ? ["--network", "none"] : []), "-w", opts.workdir];
  for (const m of mounts) args.push("-v", `${m.host}:${m.container}${m.readOnly ? ":ro" : ""}`);
  if (Object.keys(env).length > 0) {
    if (!opts.envFile) throw new Error("container env needs an env file");
    args.push("--env-file", opts.envFile);
  }
  if (gpus > 0) {
    if (opts.runtime === "docker") args.push("--gpus", String(gpus));
    else for (let i = 0; i < gpus; i++) args.push("--device", `nvidia.com/gpu=${i}`);
  }
  if (opts.entrypoint) args.push("--entrypoint", opts.entrypoint);
  args.push(opts.image, ...opts.command);
  return { program: opts.runtime, args, env: process.env };
}

/** The variables a host command needs to work, and nothing that grants access (AWS_*, PULUMI_*, tokens). */
const HOST_BASICS = ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM"];

function hostBasics(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(HOST_BASICS.filter((name) => env[name] !== undefined).map((name) => [name, env[name]]));
}

/** The env file docker and podman read (`NAME=value` per line; the spec refuses values with line breaks). */
export function envFileText(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([name, value]) => `${name}=${value}\n`)
    .join("");
}

/**
 * Run the job and wait for it. Never throws for a failing command: the exit code, signal and `timedOut` say what
 * happened. Throws JobFailure "container-failed" only when the runtime program cannot be started.
 */
export async function runContainer(opts: RunContainerOptions): Promise<RunResult> {
  const name = opts.name ?? `cloudcompute-${randomBytes(6).toString("hex")}`;
  // Owner-only, and removed when the run ends (on EC2 the temporary directory is in memory).
  const envDir = opts.env && Object.keys(opts.env).length > 0 && (opts.runtime === "docker" || opts.runtime === "podman") ? await fsp.mkdtemp(path.join(os.tmpdir(), "cc-env-")) : undefined;
  const envFile = envDir && path.join(envDir, "container.env");
  if (envFile) await fsp.writeFile(envFile, envFileText(opts.env!), { mode: 0o600 });
  const { program, args, env } = containerInvocation({ ...opts, name, envFile });
  const started = Date.now();
  const isHostProcess = opts.runtime === "none" || opts.runtime === "apptainer";
  let timedOut = false;
  let pid: number | undefined;
  const kill = () => {
    if (opts.runtime === "docker" || opts.runtime === "podman") {
      // Stop the container itself, not just the CLI client; --rm then removes it.
      void runProcess(opts.runtime, ["kill", name]).catch(() => undefined);
    } else killTree(pid, true, "SIGTERM");
    const force = setTimeout(() => {
      if (opts.runtime === "docker" || opts.runtime === "podman") void runProcess(opts.runtime, ["rm", "-f", name]).catch(() => undefined);
      killTree(pid, isHostProcess, "SIGKILL");
    }, opts.killGraceMs ?? 10_000);
    force.unref();
  };
  const timer =
    opts.deadline !== undefined
      ? setTimeout(() => {
          timedOut = true;
          kill();
        }, Math.max(0, opts.deadline - Date.now()))
      : undefined;
  const onAbort = () => kill();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const result = await runProcess(program, args, {
      env,
      cwd: opts.runtime === "none" ? opts.workdir : undefined,
      output: opts.output,
      detached: isHostProcess,
      onSpawn: (p) => (pid = p),
    });
    return { ...result, timedOut, seconds: (Date.now() - started) / 1000, argv: [program, ...args] };
  } catch (err) {
    throw new JobFailure("container-failed", `cannot start ${program}: ${errorMessage(err)}`, "run");
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
    if (envDir) await fsp.rm(envDir, { recursive: true, force: true });
  }
}
