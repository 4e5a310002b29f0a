/**
 * The stack program for `pulumi up` by hand: one job from stack config (`cloudcompute:*` keys and `aws:region`).
 * The driver runs the same `declareJob` as an inline program instead; both read config through job/config.ts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { checkConfigKeys, checkPlatformSupport, ConfigError, ConfigLookup, deployConfigFromConfig, specFromConfig } from "./job/config";
import { emptyPassphraseProblem, type JobSpec } from "./job/spec";
import { jobLayout } from "./job/layout";
import { describeHeldLease, leaseIsFree, readLease } from "./common/lease";
import { s3ClientFor } from "./common/s3-client";
import { errorMessage } from "./common/errors";
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

/**
 * `pulumi up` cannot hold the subject's run lease for the job's life (it returns once the instance exists), so it
 * takes none; but a subject another driver runs now is refused, before any resource is declared.
 */
async function refuseHeldSubject(spec: JobSpec): Promise<void> {
  const location = jobLayout(spec).subjectLease;
  const read = await readLease(s3ClientFor(location.bucket), location).catch((err) => {
    throw new pulumi.RunError(`the subject's run lease s3://${location.bucket}/${location.key} could not be read with your credentials: ${errorMessage(err)}`);
  });
  if (!leaseIsFree(read)) throw new pulumi.RunError(describeHeldLease(read.lease!, new Date(), read));
}

// A program that is a function: its promise's value is the stack's outputs.
export = async () => {
  const { spec, deploy } = resolve();
  await refuseHeldSubject(spec);
  const job = declareJob(spec, {
    platform: deploy.platform,
    agentBundlePath: deploy.agentBundlePath ?? path.join(__dirname, "dist", "agent.js"),
  });
  return {
    jobId: spec.jobId,
    instanceId: job.instanceId,
    launchId: job.launchId,
    roleArn: job.roleArn,
    markerUrl: job.markerUrl,
    region: job.region,
    specUrl: job.specUrl,
  };
};
