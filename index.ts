/**
 * The stack program for `pulumi up` by hand: one job from stack config (`cloudcompute:*` keys and `aws:region`).
 * The driver runs the same `declareJob` as an inline program instead; both read config through job/config.ts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { checkConfigKeys, checkPlatformSupport, ConfigError, ConfigLookup, deployConfigFromConfig, specFromConfig } from "./job/config";
import { emptyPassphraseProblem } from "./job/spec";
import { declareJob } from "./infra";

/** `namespace:name` keys read through Pulumi's config; a job's id is its stack's name unless set. */
const get: ConfigLookup = (key) => {
  const [namespace, name] = key.split(":");
  const value = new pulumi.Config(namespace).get(name);
  return value ?? (key === "cloudcompute:jobId" ? pulumi.getStack() : undefined);
};

/** Bad config ends the update with its message alone (a RunError), before any resource is declared. */
function resolve() {
  try {
    checkConfigKeys(Object.keys(pulumi.runtime.allConfig()));
    // A manifest path in stack config is relative to the project directory, where `pulumi up` runs.
    const spec = specFromConfig(get, {}, new Date(), { readFile: (file) => fs.readFileSync(path.resolve(file), "utf8") });
    const deploy = deployConfigFromConfig(get);
    checkPlatformSupport(spec, deploy.platform);
    // The stack's secrets provider is the passphrase one whenever the CLI hands us a passphrase variable.
    const usesPassphrase = "PULUMI_CONFIG_PASSPHRASE" in process.env || "PULUMI_CONFIG_PASSPHRASE_FILE" in process.env;
    const problem = usesPassphrase ? emptyPassphraseProblem(spec, process.env) : undefined;
    if (problem) throw new ConfigError([problem]);
    return { spec, deploy };
  } catch (err) {
    if (err instanceof ConfigError) throw new pulumi.RunError(err.message);
    throw err;
  }
}

const { spec, deploy } = resolve();
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
