/**
 * The instance role's permissions, as plain JSON built from the spec: read exactly the job's role-accessed inputs,
 * its own control objects and the agent bundle; write exactly its results and control area. Nothing else — no
 * List, no wildcard buckets, no EC2 or other service actions (the agent learns its instance id from IMDS).
 */
import { jobLayout } from "../job/layout";
import { parseS3Url, S3Location } from "../job/s3url";
import type { JobSpec } from "../job/spec";

export interface PolicyStatement {
  Sid: string;
  Effect: "Allow";
  Action: string[];
  Resource: string[];
}

export interface PolicyDocument {
  Version: "2012-10-17";
  Statement: PolicyStatement[];
}

export const EC2_ASSUME_ROLE_POLICY = {
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
} as const;

export const READ_ACTIONS = ["s3:GetObject"];
/** Multipart uploads (large outputs) need the abort/list-parts pair on the same keys as PutObject. */
export const WRITE_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"];

export function partitionOf(region: string): string {
  if (region.startsWith("cn-")) return "aws-cn";
  if (region.startsWith("us-gov-")) return "aws-us-gov";
  return "aws";
}

/**
 * IAM treats `*`, `?` and `$` in a resource as wildcard/variable syntax; S3 keys may contain them literally.
 * `${*}`, `${?}` and `${$}` are IAM's escapes, so a key matches only itself.
 */
export function iamLiteral(text: string): string {
  return text.replace(/[*?$]/g, (ch) => `\${${ch}}`);
}

function objectArn(partition: string, loc: S3Location, wildcardBelow = false): string {
  const key = iamLiteral(loc.key);
  return `arn:${partition}:s3:::${loc.bucket}/${wildcardBelow ? `${key.replace(/\/?$/, "/")}*` : key}`;
}

/** The role policy for one job. `spec.agent` must be set (declareJob sets it when staging the bundle). */
export function jobPolicyDocument(spec: JobSpec): PolicyDocument {
  if (!spec.agent) throw new Error("the spec has no agent bundle reference (spec.agent)");
  const partition = partitionOf(spec.instance.region);
  const layout = jobLayout(spec);
  const agentKey = parseS3Url(spec.agent.url);
  const inputArns = spec.inputs.filter((input) => input.access === "role").map((input) => objectArn(partition, parseS3Url(input.url)));
  const controlArn = objectArn(partition, layout.control, true);
  const pointerArn = objectArn(partition, layout.resultsPointer);
  const resultsArn = objectArn(partition, layout.results, true);
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "ReadJobInputsControlAndAgent",
        Effect: "Allow",
        Action: READ_ACTIONS,
        // The control area includes the job's uploaded outputs, the source of the promotion's server-side copies.
        Resource: [...new Set([...inputArns, controlArn, objectArn(partition, agentKey), pointerArn])],
      },
      {
        Sid: "WriteJobResultsAndControl",
        Effect: "Allow",
        Action: WRITE_ACTIONS,
        Resource: [resultsArn, controlArn, pointerArn],
      },
      // Layout bids: create the prefix's dataset_description.json (conditionally: agent/dataset-description.ts), that key only.
      ...(layout.datasetDescription
        ? [{ Sid: "CreateDatasetDescription", Effect: "Allow" as const, Action: ["s3:PutObject"], Resource: [objectArn(partition, layout.datasetDescription)] }]
        : []),
      {
        // A successful re-run removes what the previous run left in the subject's results (listed in the pointer).
        Sid: "RemoveStaleResults",
        Effect: "Allow",
        Action: ["s3:DeleteObject"],
        Resource: [resultsArn],
      },
    ],
  };
}
