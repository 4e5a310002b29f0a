/**
 * A sandbox for running the real driver CLI end to end: a moto S3 server, a private CLOUDCOMPUTE_HOME (file backend,
 * job index, workspaces), a freshly built agent bundle, seeded ABCD-like subject archives and a config file.
 * Used by the e2e tests, the demo and the driver benchmark.
 */
import type { BatchResult } from "../driver/batch";
import type { BatchEvent } from "../driver/batch-events";
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { pulumiCacheRoot } from "../driver/engine";
import type { JobRecord } from "../driver/jobindex";
import { makeAbcdArchive } from "./abcd-data";
import { MotoServer, startMoto } from "./moto";

export const REPO_ROOT = path.resolve(__dirname, "..");
export const CLI = path.join(REPO_ROOT, "bin", "cloudcompute.js");
export const SANDBOX_PASSPHRASE = "cc-sandbox-passphrase-not-for-real-stacks";

export interface DriverSandbox {
  moto: MotoServer;
  s3: S3Client;
  bucket: string;
  home: string;
  agentBundle: string;
  /** Environment for driver processes: S3 endpoint and dummy credentials, CLOUDCOMPUTE_HOME, extra env. */
  env: Record<string, string>;
  /** Seed `abcd/<subject>.tgz` for each subject. */
  seed(subjects: string[]): Promise<void>;
  /** Write a config file (Pulumi.dev.yaml style) and return its path. */
  writeConfig(name: string, config: Record<string, unknown>): string;
  /** `pulumi <args> --stack <jobId>` against the sandbox's backend, parsed as JSON (use with --json / export). */
  pulumiJson(jobId: string, args: string[]): any;
  /** How many resources the job's stack holds. */
  stackResources(jobId: string): number;
  stackHistory(jobId: string): Array<{ kind: string; result: string; message?: string }>;
  /** The job index as the driver wrote it. */
  records(): JobRecord[];
  /** Run the CLI; resolves when it exits. */
  run(args: string[], opts?: RunOptions): Promise<CliResult>;
  stop(): Promise<void>;
}

export interface RunOptions {
  onSpawn?: (child: ChildProcess) => void;
  extraEnv?: Record<string, string>;
  /** Also show the CLI's stderr (progress, summary) live on ours. */
  echoStderr?: boolean;
  /** Its own process group, as a terminal's foreground job is: signal `-pid` to reach it and its children at once. */
  detached?: boolean;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The AWS SDK warns about Node 20 on every start; it says nothing about the run. */
export function withoutSdkNoise(text: string): string {
  return text.replace(/\(node:\d+\) Warning: NodeVersionSupportWarning[\s\S]*?--trace-warnings[^\n]*\n/g, "");
}

/** The Pulumi CLI the driver would use: scripts/pulumi-cli.sh's build, else `pulumi` on PATH. */
export function pulumiBinary(): string {
  const cached = path.join(pulumiCacheRoot(), "bin", "pulumi");
  return fs.existsSync(cached) ? cached : "pulumi";
}

/** Is this a live process (not a zombie)? */
export function processAlive(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

export async function startDriverSandbox(extraEnv: Record<string, string> = {}): Promise<DriverSandbox> {
  const moto = await startMoto();
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "cc-driver-"));
  const s3 = new S3Client({ forcePathStyle: true, region: "us-east-1", endpoint: moto.endpoint, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
  const bucket = "cc-study";
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  // A bundle of our own: other work must not swap dist/agent.js under a running test.
  const agentBundle = path.join(home, "agent.js");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { buildAgent } = require(path.join(REPO_ROOT, "scripts", "build-agent.js")) as { buildAgent(opts: { outfile: string }): Promise<unknown> };
  await buildAgent({ outfile: agentBundle });
  // A real passphrase: jobs with secrets (env values, presigned URLs) are refused with an empty one.
  const env: Record<string, string> = { ...moto.env, CLOUDCOMPUTE_HOME: home, PULUMI_CONFIG_PASSPHRASE: SANDBOX_PASSPHRASE, ...extraEnv };
  const children = new Set<ChildProcess>();

  const pulumi = pulumiBinary();
  const pulumiJson = (jobId: string, args: string[]) => {
    const res = spawnSync(pulumi, [...args, "--stack", jobId], {
      cwd: path.join(home, "work", jobId), // the job's workspace holds the project file
      encoding: "utf8",
      env: { ...process.env, PULUMI_BACKEND_URL: pathToFileURL(path.join(home, "state")).href, PULUMI_CONFIG_PASSPHRASE: SANDBOX_PASSPHRASE, PULUMI_SKIP_UPDATE_CHECK: "true" },
    });
    if (res.status !== 0) throw new Error(`pulumi ${args.join(" ")} --stack ${jobId} failed: ${res.stderr}`);
    return JSON.parse(res.stdout);
  };

  return {
    moto,
    s3,
    bucket,
    home,
    agentBundle,
    env,
    pulumiJson,
    stackResources: (jobId) => (pulumiJson(jobId, ["stack", "export"]).deployment.resources ?? []).length,
    stackHistory: (jobId) => pulumiJson(jobId, ["stack", "history", "--json"]),
    records() {
      const dir = path.join(home, "jobs");
      if (!fs.existsSync(dir)) return [];
      return fs.readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as JobRecord);
    },
    async seed(subjects) {
      for (const subject of subjects) {
        const archive = await makeAbcdArchive(subject);
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `abcd/${subject}.tgz`, Body: archive.tgz }));
      }
    },
    writeConfig(name, config) {
      const file = path.join(home, name);
      fs.writeFileSync(file, JSON.stringify({ config }, null, 2)); // JSON is YAML
      return file;
    },
    run(args, opts = {}) {
      return new Promise((resolve, reject) => {
        const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env, ...opts.extraEnv };
        delete childEnv.PULUMI_BACKEND_URL; // the sandbox's file backend under CLOUDCOMPUTE_HOME
        const child = spawn(process.execPath, [CLI, ...args], { cwd: home, env: childEnv, stdio: ["ignore", "pipe", "pipe"], detached: opts.detached });
        children.add(child);
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr.on("data", (c: Buffer) => {
          stderr += c.toString();
          if (opts.echoStderr) process.stderr.write(withoutSdkNoise(c.toString()));
        });
        child.on("error", reject);
        child.on("close", (code, signal) => {
          children.delete(child);
          resolve({ code, signal, stdout, stderr: withoutSdkNoise(stderr) });
        });
        opts.onSpawn?.(child);
      });
    },
    async stop() {
      for (const child of children) child.kill("SIGKILL");
      await moto.stop();
      if (!process.env.CLOUDCOMPUTE_KEEP_SANDBOX) fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/** The common part of a local job's config: S3 layout in the sandbox bucket, inputs by subject. */
export function localJobConfig(sandbox: DriverSandbox, container: { image: string; runtime: string; command: string[] }): Record<string, unknown> {
  return {
    "aws:region": "us-east-1",
    "cloudcompute:platform": "local",
    "cloudcompute:agentBundle": sandbox.agentBundle,
    "cloudcompute:image": container.image,
    "cloudcompute:runtime": container.runtime,
    "cloudcompute:command": container.command,
    "cloudcompute:inputs": [{ name: "t1", url: `s3://${sandbox.bucket}/abcd/{subject}.tgz`, select: "**/*_T1w.nii" }],
    "cloudcompute:outputPrefix": `s3://${sandbox.bucket}/results`,
    "cloudcompute:instanceType": "m5.large",
    "cloudcompute:heartbeatTimeoutSeconds": "60",
  };
}

/** Live processes whose working directory is inside `dir` (a local job's agent and what it runs). */
export function processesIn(dir: string): number[] {
  return fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => {
    try {
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      return (cwd === dir || cwd.startsWith(dir + path.sep)) && processAlive(pid);
    } catch {
      return false;
    }
  });
}

/** Wait until the sandbox's job index holds a record matching `predicate`. */
export async function waitForRecord(sandbox: DriverSandbox, predicate: (r: JobRecord) => boolean, what: string, timeoutMs = 120_000): Promise<JobRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = sandbox.records().find(predicate);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Every completion marker under the sandbox's `results/` prefix, by subject: the outcomes of the jobs that ran.
 * "Each subject runs exactly once" (the lease test, `bench scale`'s duplicate_runs) counts these.
 */
export async function markersBySubject(sandbox: DriverSandbox, prefix = "results/"): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  let token: string | undefined;
  do {
    const page = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: `${prefix}_cloudcompute/`, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      if (!object.Key!.endsWith("/marker.json")) continue;
      const res = await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: object.Key! }));
      const marker = JSON.parse(await res.Body!.transformToString()) as { subject: string; outcome: string };
      found.set(marker.subject, [...(found.get(marker.subject) ?? []), marker.outcome]);
    }
    token = page.NextContinuationToken;
  } while (token);
  return found;
}

/** A batch's result from its `--json` output: the last line (the lines before it are the batch's events). */
export function batchResultOf(stdout: string): BatchResult {
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as BatchResult;
}

/** A batch's `--json` events (every line but the last). */
export function batchEventsOf(stdout: string): BatchEvent[] {
  return stdout.trim().split("\n").slice(0, -1).map((line) => JSON.parse(line) as BatchEvent);
}
