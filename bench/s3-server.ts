/**
 * The local S3 server the benchmarks run against.
 *
 * The server, not loopback networking, bounds every S3 benchmark on one machine, so we use the fastest one we can get:
 * versitygw (a Go S3 gateway) with its posix backend, built from the Go module proxy by scripts/s3-server.sh into
 * ~/.cache/cloudcompute/bin. Measured here (2 cores): versitygw is several times faster than moto or s3rver in both
 * directions. When the binary is absent and cannot be built, we fall back to moto (preinstalled), which is slow but
 * speaks enough S3 for every case.
 */
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, startMoto } from "../sandbox/moto";

export type S3ServerKind = "versitygw" | "moto";

export interface S3Server {
  kind: S3ServerKind;
  /** Name and version, for the report. */
  name: string;
  endpoint: string;
  /** The server's process id, for CPU accounting (absent for moto, whose helper does not expose it). */
  pid?: number;
  /** Environment for SDK clients and child processes (AWS_ENDPOINT_URL, dummy credentials, region). */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export const CACHE_DIR =
  process.env.CLOUDCOMPUTE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "cloudcompute");
export const VERSITYGW_VERSION = "v1.8.0";
const ACCESS_KEY = "benchaccess";
const SECRET_KEY = "benchsecret";

export function versitygwBinary(): string {
  return process.env.VERSITYGW_BIN ?? join(CACHE_DIR, "bin", "versitygw");
}

/** Build versitygw with scripts/s3-server.sh if it is not cached yet. Returns false when that is impossible. */
export function ensureVersitygw(log: (line: string) => void): boolean {
  if (existsSync(versitygwBinary())) return true;
  log(`versitygw not found at ${versitygwBinary()}; building it with scripts/s3-server.sh (about a minute)`);
  const script = resolve(__dirname, "..", "scripts", "s3-server.sh");
  const result = spawnSync("bash", [script], { stdio: ["ignore", "inherit", "inherit"], timeout: 15 * 60_000 });
  return result.status === 0 && existsSync(versitygwBinary());
}

async function waitUntilAnswering(url: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`S3 server exited early with code ${child.exitCode}:\n${output()}`);
    try {
      await fetch(url); // any HTTP answer (403 without credentials) means it is serving
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`S3 server did not answer at ${url} within ${timeoutMs} ms:\n${output()}`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(timer);
      done();
    });
    child.kill("SIGTERM");
  });
}

export async function startVersitygw(): Promise<S3Server> {
  const root = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), "cc-bench-s3-"));
  const port = await freePort();
  // The posix backend keeps ETags and multipart state in user xattrs: the root must be on a file system with them
  // (ext4, xfs, btrfs; tmpfs only on recent kernels). `--nometa` would drop them and break CompleteMultipartUpload.
  const child = spawn(
    versitygwBinary(),
    ["--access", ACCESS_KEY, "--secret", SECRET_KEY, "--port", `127.0.0.1:${port}`, "--quiet", "posix", root],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitUntilAnswering(endpoint, child, () => output, 30_000);
  } catch (err) {
    child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    kind: "versitygw",
    name: `versitygw ${VERSITYGW_VERSION} (posix backend)`,
    endpoint,
    pid: child.pid,
    env: {
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: SECRET_KEY,
      AWS_REGION: "us-east-1",
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
    },
    async stop() {
      await stopChild(child);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function startS3Server(
  preferred: S3ServerKind | "auto" = "auto",
  log: (line: string) => void = () => {},
): Promise<S3Server> {
  if (preferred !== "moto") {
    if (ensureVersitygw(log)) return startVersitygw();
    if (preferred === "versitygw") throw new Error(`versitygw is not available at ${versitygwBinary()} and could not be built`);
    log("versitygw is unavailable: falling back to moto (expect much lower S3 throughput)");
  }
  const moto = await startMoto();
  return { kind: "moto", name: `moto ${motoVersion()}`, endpoint: moto.endpoint, env: moto.env, stop: () => moto.stop() };
}

function motoVersion(): string {
  const result = spawnSync("python3", ["-c", "import moto; print(moto.__version__)"], { encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : "(unknown version)";
}
