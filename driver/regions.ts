/**
 * Where each input's bucket is, against where the instance runs. Reading across regions is billed per GB and is
 * slower; ABCD's NDA buckets are in us-east-1. A job whose inputs sit in another region is refused unless the user
 * says `--allow-cross-region`; a region that cannot be found (no permission, endpoint unreachable) is a warning.
 */
import { GetBucketLocationCommand, HeadBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { parseS3Url, needsPathStyle } from "../job/s3url";
import { redactUrl, type JobSpec } from "../job/spec";
import { errorMessage } from "../common/errors";
import { BadInputError } from "./errors";

const REGION = /^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$/;

/**
 * The region of a presigned URL on an AWS S3 host: a SigV4 URL's credential scope names the region it was signed for
 * (S3 refuses it anywhere else); else the host's `bucket.s3.REGION`, `s3.REGION/bucket`, `s3-REGION`, `s3-fips.REGION`,
 * or the legacy `s3.amazonaws.com/bucket` (path style reaches only us-east-1). A virtual-hosted legacy host
 * (`bucket.s3.amazonaws.com`, any region's bucket answers there) or an accelerate one names none.
 */
export function regionFromS3Host(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  const host = parsed.hostname.toLowerCase();
  if (!host.endsWith(".amazonaws.com")) return undefined;
  const scope = (parsed.searchParams.get("X-Amz-Credential") ?? "").split("/");
  if (scope.length === 5 && REGION.test(scope[2]) && scope[3] === "s3") return scope[2];
  const labels = host.slice(0, -".amazonaws.com".length).split(".");
  // The last s3-ish label and what follows it: s3 | s3.REGION | s3-REGION | s3.dualstack.REGION | s3-fips.REGION
  const at = labels.lastIndexOf("s3") >= 0 ? labels.lastIndexOf("s3") : labels.findIndex((label) => /^s3-/.test(label));
  if (at < 0) return undefined;
  const label = labels[at];
  const rest = labels.slice(at + 1).filter((part) => part !== "dualstack");
  if (label === "s3-external-1") return "us-east-1";
  if (label !== "s3" && label !== "s3-fips") return REGION.test(label.slice(3)) ? label.slice(3) : undefined;
  if (rest.length === 0) return label === "s3" && at === 0 ? "us-east-1" : undefined;
  return REGION.test(rest[0]) ? rest[0] : undefined;
}

/** Keys to ask with instead of the default chain's (the --input-profile signer's: its bucket may be readable only to them). */
export type BucketCredentials = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };

export interface RegionAnswer {
  region?: string;
  /** Why the region is unknown. */
  why?: string;
}

/** A bucket's region: HeadBucket's x-amz-bucket-region (also on 301/403 answers), else GetBucketLocation. */
export async function lookUpBucketRegion(bucket: string, anonymous: boolean, credentials?: BucketCredentials): Promise<RegionAnswer> {
  const client = new S3Client({
    region: "us-east-1",
    forcePathStyle: needsPathStyle(bucket) || Boolean(process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3),
    followRegionRedirects: false,
    maxAttempts: 2,
    // An unreachable endpoint must end in a warning soon, not hold the launch.
    requestHandler: { connectionTimeout: 5000, requestTimeout: 15000 },
    ...(credentials && !anonymous ? { credentials } : {}),
    ...(anonymous ? { signer: { sign: async (request: any) => request }, credentials: { accessKeyId: "", secretAccessKey: "" } } : {}),
  });
  try {
    try {
      const head = await client.send(new HeadBucketCommand({ Bucket: bucket }));
      if (head.BucketRegion) return { region: head.BucketRegion };
    } catch (err) {
      const header = (err as { $response?: { headers?: Record<string, string> } }).$response?.headers?.["x-amz-bucket-region"];
      if (header) return { region: header };
    }
    try {
      const location = await client.send(new GetBucketLocationCommand({ Bucket: bucket }));
      const constraint = location.LocationConstraint as string | undefined;
      return { region: !constraint ? "us-east-1" : constraint === "EU" ? "eu-west-1" : constraint };
    } catch (err) {
      return { why: errorMessage(err).split("\n")[0] };
    }
  } finally {
    client.destroy();
  }
}

/** Region lookups, one per bucket for a whole batch. */
export class RegionCache {
  private readonly answers = new Map<string, Promise<RegionAnswer>>();
  constructor(private readonly lookUp: typeof lookUpBucketRegion = lookUpBucketRegion) {}
  region(bucket: string, anonymous: boolean, credentials?: BucketCredentials): Promise<RegionAnswer> {
    const key = credentials ? `${bucket}\0${credentials.accessKeyId}` : bucket;
    let answer = this.answers.get(key);
    if (!answer) {
      answer = this.lookUp(bucket, anonymous, credentials);
      this.answers.set(key, answer);
    }
    return answer;
  }
  get lookups(): number {
    return this.answers.size;
  }
}

/**
 * Refuse (BadInputError) inputs in another region than the instance's unless `allowCrossRegion`; return a warning per
 * input whose region is unknown.
 */
export async function checkInputRegions(spec: JobSpec, options: { allowCrossRegion: boolean; cache: RegionCache }): Promise<string[]> {
  const warnings: string[] = [];
  const elsewhere: Array<{ line: string; region: string }> = [];
  const here = spec.instance.region;
  for (const input of spec.inputs) {
    let answer: RegionAnswer;
    let where: string;
    if (input.access === "presigned") {
      where = redactUrl(input.url);
      const region = regionFromS3Host(input.url);
      answer = region ? { region } : { why: "its host names no AWS region" };
    } else {
      const { bucket } = parseS3Url(input.url);
      where = `s3://${bucket}`;
      answer = await options.cache.region(bucket, input.access === "public");
    }
    if (!answer.region) {
      warnings.push(`input "${input.name}" (${where}): its region is unknown (${answer.why}); if it is not ${here}, reading it costs inter-region transfer`);
      continue;
    }
    if (answer.region !== here) elsewhere.push({ line: `input "${input.name}" (${where}) is in ${answer.region}`, region: answer.region });
  }
  if (elsewhere.length > 0 && !options.allowCrossRegion) {
    throw new BadInputError(
      `${elsewhere.map((e) => e.line).join("; ")}, but the instance would run in ${here}: reading across regions is billed per GB and slower ` +
        `(ABCD's NDA buckets are in us-east-1). Run in the data's region with --region ${new Set(elsewhere.map((e) => e.region)).size === 1 ? elsewhere[0].region : "REGION"}, or accept the transfer with --allow-cross-region`,
    );
  }
  return warnings;
}
