/**
 * The stack program for `pulumi up` by hand: one job from stack config (`cloudcompute:*` keys and `aws:region`).
 * The driver runs the same `declareJob` as an inline program instead.
 */
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { ConfigLookup, deployConfigFromConfig, specFromConfig } from "./job/config";
import { declareJob } from "./infra";

/** `namespace:name` keys read through Pulumi's config; a job's id is its stack's name unless set. */
const get: ConfigLookup = (key) => {
  const [namespace, name] = key.split(":");
  const value = new pulumi.Config(namespace).get(name);
  return value ?? (key === "cloudcompute:jobId" ? pulumi.getStack() : undefined);
};

const spec = specFromConfig(get);
const deploy = deployConfigFromConfig(get);
const job = declareJob(spec, {
  platform: deploy.platform,
  agentBundlePath: deploy.agentBundlePath ?? path.join(__dirname, "dist", "agent.js"),
});

export const jobId = spec.jobId;
export const instanceId = job.instanceId;
export const launchId = job.launchId;
export const roleArn = job.roleArn;
export const markerUrl = job.markerUrl;
export const region = job.region;
export const specUrl = job.specUrl;
