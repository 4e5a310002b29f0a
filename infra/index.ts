/**
 * `declareJob`: THE stack program of one job, used by index.ts (`pulumi up` by hand) and by the driver's inline
 * program. It stages spec.json and the agent bundle in S3, then declares the compute: an EC2 instance (`aws`) or a
 * local agent process (`local`).
 */
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { agentBundleLocation, jobLayout, launchRecordKeys } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import type { PlatformName } from "../job/platform";
import { JobSpec, parseJobSpec, serialiseJobSpec, specHasSecrets } from "../job/spec";
import { AwsJob, planAwsJob } from "./aws";
import { JobStaging, JobStagingArgs } from "./staging";

export interface DeclareJobOptions {
  platform: PlatformName;
  /** The built agent (dist/agent.js); its sha256 names it in S3 and the instance verifies it. */
  agentBundlePath: string;
  /** Pause after creating the instance profile (aws only). Default 15 s. */
  profilePropagationSeconds?: number;
}

export interface JobOutputs {
  instanceId: pulumi.Output<string>;
  /** This launch's nonce: a marker belongs to this launch only if its launchId is this. */
  launchId: pulumi.Output<string>;
  /** The instance role (aws only). */
  roleArn?: pulumi.Output<string>;
  markerUrl: pulumi.Output<string>;
  region: pulumi.Output<string>;
  specUrl: pulumi.Output<string>;
}

export interface AgentBundle {
  path: string;
  sha256: string;
}

export function readAgentBundle(bundlePath: string): AgentBundle {
  const absolute = path.resolve(bundlePath);
  let content: Buffer;
  try {
    content = readFileSync(absolute);
  } catch (err) {
    throw new Error(`agent bundle not readable at ${absolute} (${(err as NodeJS.ErrnoException).code ?? err}): run \`npm run build:agent\` first`);
  }
  return { path: absolute, sha256: createHash("sha256").update(content).digest("hex") };
}

/** The spec as staged: pointing at the content-addressed agent bundle. */
export function withAgent(spec: JobSpec, bundle: AgentBundle): JobSpec {
  return { ...spec, agent: { url: formatS3Url(agentBundleLocation(spec.outputs.prefix, bundle.sha256)), sha256: bundle.sha256 } };
}

/** What JobStaging uploads: the spec (a secret when it holds presigned URLs) and the bundle. */
export function stagingArgs(spec: JobSpec, bundle: AgentBundle): JobStagingArgs {
  const specJson = serialiseJobSpec(spec);
  return {
    specJson: specHasSecrets(spec) ? pulumi.secret(specJson) : specJson,
    spec: jobLayout(spec).spec,
    staleKeys: launchRecordKeys(spec),
    agent: agentBundleLocation(spec.outputs.prefix, bundle.sha256),
    agentSha256: bundle.sha256,
    agentBundlePath: bundle.path,
    region: spec.instance.region,
  };
}

export function declareJob(input: JobSpec, opts: DeclareJobOptions): JobOutputs {
  // Validate again: a spec built by hand in a program gets the same checks, before any resource exists.
  const bundle = readAgentBundle(opts.agentBundlePath);
  // Each launch gets its own nonce (the driver sets one per attempt; each `pulumi up` of index.ts is a new launch):
  // status and markers carry it, so those left by an earlier launch under the same job id are never taken for ours.
  const spec = withAgent({ ...parseJobSpec(input), launchId: input.launchId ?? randomUUID() }, bundle);
  const secret = specHasSecrets(spec);
  // Refuse what cannot run on AWS before anything is staged.
  const plan = opts.platform === "aws" ? planAwsJob(spec) : undefined;

  const staging = new JobStaging("staging", stagingArgs(spec, bundle));

  if (opts.platform === "local") {
    // Loaded only here so the aws path never depends on the local runner.
    const { LocalJob } = require("./local") as typeof import("./local");
    const local = new LocalJob(
      "job",
      { spec: secret ? pulumi.secret(spec) : spec, specUrl: staging.specUrl, agentBundlePath: bundle.path },
      { dependsOn: [staging] },
    );
    return {
      instanceId: local.instanceId,
      launchId: pulumi.output(spec.launchId!),
      markerUrl: local.markerUrl,
      region: pulumi.output(spec.instance.region),
      specUrl: staging.specUrl,
    };
  }

  const job = new AwsJob("job", { spec, plan, startAfter: [staging], profilePropagationSeconds: opts.profilePropagationSeconds });
  return {
    instanceId: job.instanceId,
    launchId: pulumi.output(spec.launchId!),
    roleArn: job.roleArn,
    markerUrl: job.markerUrl,
    region: job.region,
    specUrl: staging.specUrl,
  };
}
