/**
 * Real containers for the tests, the demo and the benchmarks: podman + runc with a CONTAINERS_CONF that sets the ulimits and runtime these machines
 * need, a tiny image imported from a busybox-static root file system, and a local registry (Debian's docker-registry)
 * the image is pushed to, so that a pull is a real pull.
 */
import { execFile, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, copyFileSync, symlinkSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./moto";

const run = promisify(execFile);

export interface PodmanEnv {
  /** Environment for podman and for anything that spawns it (the agent). */
  env: Record<string, string>;
  /** The image in the local registry, e.g. 127.0.0.1:PORT/cloudcompute-test/busybox:1 (not present locally). */
  registryImage: string;
  registry: string;
}

export function podmanAvailable(): boolean {
  return spawnSync("podman", ["--version"], { stdio: "ignore" }).status === 0;
}

const BUSYBOX = "/bin/busybox";
const APPLETS = ["sh", "cat", "ls", "mkdir", "cp", "echo", "head", "tail", "od", "wc", "sleep", "dd", "sha256sum", "printf", "test", "tr", "rm", "env", "stat", "seq"];

let prepared: Promise<PodmanEnv> | undefined;

/** Set up once per test process: config file, image, registry (stopped when the process exits). */
export function podmanTestEnv(): Promise<PodmanEnv> {
  prepared ??= prepare();
  return prepared;
}

async function prepare(): Promise<PodmanEnv> {
  const dir = mkdtempSync(path.join(tmpdir(), "cc-podman-"));
  const conf = path.join(dir, "containers.conf");
  writeFileSync(conf, '[containers]\ndefault_ulimits=["nofile=4096:4096","nproc=4096:4096"]\n\n[engine]\nruntime="runc"\n');
  const env = { CONTAINERS_CONF: conf };
  Object.assign(process.env, env); // the agent under test spawns podman from this process

  // Root file system: busybox and its applets as symlinks, plus the directories the bind mounts need.
  const rootfs = path.join(dir, "rootfs");
  mkdirSync(path.join(rootfs, "bin"), { recursive: true });
  for (const d of ["data", "tmp", "etc"]) mkdirSync(path.join(rootfs, d));
  copyFileSync(BUSYBOX, path.join(rootfs, "bin", "busybox"));
  for (const applet of APPLETS) symlinkSync("busybox", path.join(rootfs, "bin", applet));
  const tarball = path.join(dir, "rootfs.tar");
  await run("tar", ["-C", rootfs, "-cf", tarball, "."]);
  const localTag = `localhost/cloudcompute-test/busybox:${process.pid}`;
  await run("podman", ["import", "--change", "ENV=PATH=/bin", tarball, localTag]);

  // A registry on a free loopback port.
  const port = await freePort();
  const registry = `127.0.0.1:${port}`;
  const config = path.join(dir, "registry.yml");
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(dir, "registry")}\nhttp:\n  addr: ${registry}\n`,
  );
  const child = spawn("/usr/bin/docker-registry", ["serve", config], { stdio: "ignore" });
  child.unref();
  process.once("exit", () => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await fetch(`http://${registry}/v2/`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not start on ${registry}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const registryImage = `${registry}/cloudcompute-test/busybox:1`;
  await run("podman", ["tag", localTag, registryImage]);
  await run("podman", ["push", "--tls-verify=false", registryImage]);
  // Only the registry holds it now, so the agent's pull really transfers it.
  await run("podman", ["rmi", registryImage, localTag]);
  return { env, registryImage, registry };
}

/** Is a container with this name (running or not) still known to podman? */
export async function containerExists(name: string): Promise<boolean> {
  const { stdout } = await run("podman", ["ps", "-a", "--filter", `name=^${name}$`, "--format", "{{.Names}}"]);
  return stdout.trim().length > 0;
}
