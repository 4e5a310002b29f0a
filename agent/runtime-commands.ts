/**
 * Runtime command lines: the docker, podman and apptainer (or plain host, runtime "none") argv that pull an image,
 * run a job and stop it. Nothing here starts a process.
 */
import path from "node:path";
import type { ContainerRuntime } from "../job/spec";
import { JobFailure } from "./errors";

export interface Mount {
  host: string;
  container: string;
  readOnly?: boolean;
}

/** What the runtime's command line says: the image, the command and how it is contained. */
export interface ContainerCommand {
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
}

export interface Invocation {
  program: string;
  args: string[];
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

/** The pull of `image`, and what `run` then takes: the reference, or for apptainer the SIF file it writes in `workdir`. */
export function pullInvocation(runtime: Exclude<ContainerRuntime, "none">, image: string, workdir: string): Invocation & { runRef: string } {
  const program = runtimeProgram(runtime);
  if (runtime === "apptainer") {
    const runRef = path.join(workdir, "image.sif");
    const source = image.includes("://") ? image : `docker://${image}`;
    return { program, args: ["pull", "--force", ...(isLoopbackRegistry(image) ? ["--no-https"] : []), runRef, source], runRef };
  }
  return { program, args: ["pull", ...(runtime === "podman" && isLoopbackRegistry(image) ? ["--tls-verify=false"] : []), image], runRef: image };
}

/**
 * Program and arguments for one run, and the environment to give the CLI. Env values never appear in argv, and
 * never become the docker/podman CLI's own environment (a spec's PATH, DOCKER_HOST or LD_PRELOAD would change what
 * the CLI does): they go through `envFile`, which the caller writes with `envFileText` and removes.
 */
export function containerInvocation(opts: ContainerCommand & { name: string; envFile?: string }): Invocation & { env: NodeJS.ProcessEnv } {
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
 * How to stop a docker/podman container by name — killing the CLI client would leave it running — and to remove it by
 * force after the grace; undefined for host processes (none, apptainer), which are signalled instead.
 */
export function containerStopInvocations(runtime: ContainerRuntime, name: string): { stop: Invocation; remove: Invocation } | undefined {
  if (runtime !== "docker" && runtime !== "podman") return undefined;
  return { stop: { program: runtime, args: ["kill", name] }, remove: { program: runtime, args: ["rm", "-f", name] } };
}
