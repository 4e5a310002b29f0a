/**
 * Where the driver (and a local job) keeps things on this machine. Everything lives under one directory, `$CLOUDCOMPUTE_HOME`
 * (default ~/.cloudcompute): the default Pulumi file backend, the job index, per-job workspaces and local job
 * work directories.
 */
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { isJobId } from "../job/layout";

export function cloudcomputeHome(): string {
  return process.env.CLOUDCOMPUTE_HOME || path.join(os.homedir(), ".cloudcompute");
}

/**
 * The Pulumi backend: `PULUMI_BACKEND_URL` if set, else the configured one (`cloudcompute:backend`), else a file
 * backend under the cloudcompute home. Any Pulumi backend URL works (`s3://bucket/state`, `file://...`).
 */
export function backendUrl(configured?: string): string {
  return process.env.PULUMI_BACKEND_URL || configured || pathToFileURL(path.join(cloudcomputeHome(), "state")).href;
}

/** One Pulumi workspace directory per job: concurrently updated stacks must not share settings files. */
export function jobWorkspaceDir(jobId: string): string {
  // A crafted id such as ../../project must never name a directory outside the home (Pulumi writes Pulumi.yaml there).
  if (!isJobId(jobId)) throw new Error(`"${jobId}" is not a job id`);
  return path.join(cloudcomputeHome(), "work", jobId);
}

export function jobIndexDir(): string {
  return path.join(cloudcomputeHome(), "jobs");
}

/** The repository (or installed package) root: where package.json, node_modules and dist/agent.js are. */
export const PACKAGE_ROOT = path.resolve(__dirname, "..");

export function defaultAgentBundlePath(): string {
  return process.env.CLOUDCOMPUTE_AGENT_BUNDLE || path.join(PACKAGE_ROOT, "dist", "agent.js");
}
