/**
 * Job specs for tests: the seed's kwyk example on an ABCD T1 archive, with per-test changes.
 */
import { parseJobSpec, JobSpec, JobSpecInput } from "../../job/spec";
import { MOCK_STACK } from "./pulumi-mocks";

export const ABCD_T1_URL =
  "s3://NDAR_Central_2/submission_14921/NDARINV1A2B3C4D_baselineYear1Arm1_ABCD-MPROC-T1_20170711184237.tgz";
export const OUTPUT_PREFIX = "s3://lab-results-bucket/kwyk";
/** A presigned URL as NDA hands them out: the query string is the credential. */
export const PRESIGNED_URL =
  "https://nda-central.s3.amazonaws.com/file.tgz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261125&X-Amz-Signature=deadbeefcafe0123456789";

type Changes = {
  [K in keyof JobSpecInput]?: K extends "container" | "instance" | "limits" | "outputs" ? Partial<JobSpecInput[K]> : JobSpecInput[K];
};

export function kwykSpec(changes: Changes = {}): JobSpec {
  const base: JobSpecInput = {
    apiVersion: "cloudcompute/v1",
    jobId: MOCK_STACK,
    subject: "NDAR_INV1A2B3C4D",
    inputs: [{ name: "t1", url: ABCD_T1_URL, access: "role", extract: "tgz", select: "**/*_T1w.nii" }],
    container: { image: "neuronets/kwyk:latest-cpu", command: ["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"] },
    outputs: { prefix: OUTPUT_PREFIX },
    instance: { type: "m5.4xlarge", region: "us-east-1" },
  };
  return parseJobSpec({
    ...base,
    ...changes,
    container: { ...base.container, ...changes.container },
    instance: { ...base.instance, ...changes.instance },
    outputs: { ...base.outputs, ...changes.outputs },
    limits: { ...base.limits, ...changes.limits },
  });
}
