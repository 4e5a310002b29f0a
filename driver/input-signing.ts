/**
 * `--input-profile NAME`: inputs written `{url: "s3://bucket/key", access: "presigned"}` are signed here, with a local
 * AWS profile, for buckets the user can read and the instance role cannot. The URL lives as long as the job may need
 * it (boot allowance + max runtime + grace + margin, at most 7 days) and goes only into the staged spec (a Pulumi
 * secret). A URL signed with temporary credentials dies with them, whatever its X-Amz-Expires: such credentials
 * that expire before the job could end are refused.
 */
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { needsPathStyle, parseS3Url } from "../job/s3url";
import { SIGV4_MAX_SECONDS } from "../job/presigned";
import { errorMessage } from "../common/errors";
import { BadInputError } from "./errors";
import { inputProfileOf, resolveJob, type ResolveExtras, type ResolvedJob, type SpecFlags } from "./options";
import { RegionCache } from "./regions";

type AwsCredentialIdentity = Awaited<ReturnType<S3Client["config"]["credentials"]>>;

/** The region a URL is signed for when its bucket's cannot be found (ABCD's NDA buckets are there). */
const FALLBACK_REGION = "us-east-1";

/** X-Amz-Date counts whole seconds: a minute more keeps the URL past the needed time it was signed for. */
function withSlack(seconds: number): number {
  return Math.min(seconds + 60, SIGV4_MAX_SECONDS);
}

export class InputSigner {
  readonly warnings: string[] = [];
  private readonly signed = new Map<string, string>();
  private readonly wanted = new Map<string, { url: string; seconds: number }>();

  constructor(
    readonly profile: string,
    private readonly credentials: AwsCredentialIdentity,
    private readonly regions: RegionCache = new RegionCache(),
  ) {
    if (credentials.sessionToken && !credentials.expiration) {
      this.warnings.push(`--input-profile ${profile}: its credentials are temporary (a session token) of unknown lifetime; a URL signed with them dies when they do`);
    }
  }

  /** The profile's credentials, read from the AWS config and credentials files (and whatever the profile names). */
  static async forProfile(profile: string, regions?: RegionCache): Promise<InputSigner> {
    let credentials: AwsCredentialIdentity;
    // The profile wins over AWS_ACCESS_KEY_ID in the environment, as meant: the SDK's warning about both says nothing here.
    const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
    const client = new S3Client({ profile, region: FALLBACK_REGION, logger: quiet });
    try {
      credentials = await client.config.credentials();
    } catch (err) {
      throw new BadInputError(
        `--input-profile ${profile}: its credentials cannot be loaded: ${errorMessage(err).split("\n")[0]} ` +
          `(is it a profile of your AWS config or credentials file, AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE? \`aws configure list-profiles\` lists them; an SSO one needs \`aws sso login --profile ${profile}\`)`,
      );
    } finally {
      client.destroy();
    }
    return new InputSigner(profile, credentials, regions);
  }

  /**
   * The presigned https URL for `url`, valid `seconds`; synchronous, for the spec reader. A URL not signed yet is
   * recorded for `signPending` and stands in as a placeholder of the same key and lifetime.
   */
  sign(url: string, seconds: number, now: Date = new Date()): string {
    const { expiration } = this.credentials;
    const needed = new Date(now.getTime() + seconds * 1000);
    if (expiration && expiration.getTime() < needed.getTime()) {
      throw new Error(
        `--input-profile ${this.profile}: its credentials are temporary and expire at ${expiration.toISOString()}, before the job could end (${needed.toISOString()}); ` +
          `a URL signed with temporary credentials dies with them, whatever its X-Amz-Expires: renew them for longer, or use a profile with long-term keys`,
      );
    }
    const id = `${seconds} ${url}`;
    const done = this.signed.get(id);
    if (done) return done;
    this.wanted.set(id, { url, seconds });
    const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
    const { bucket, key } = parseS3Url(url);
    return `https://placeholder.invalid/${bucket}/${key}?X-Amz-Date=${stamp}&X-Amz-Expires=${withSlack(seconds)}`;
  }

  get pending(): number {
    return this.wanted.size;
  }

  /** Sign every recorded URL for its bucket's region (HeadBucket, cached), with the real SDK presigner. */
  async signPending(): Promise<void> {
    for (const [id, { url, seconds }] of this.wanted) {
      const { bucket, key } = parseS3Url(url);
      // Asked with the profile's keys: the default credentials may not see the bucket (or be there at all).
      const answer = await this.regions.region(bucket, false, this.credentials);
      if (!answer.region) this.warnings.push(`--input-profile: the region of bucket ${bucket} is unknown (${answer.why}); its URL is signed for ${FALLBACK_REGION}`);
      const client = new S3Client({
        region: answer.region ?? FALLBACK_REGION,
        credentials: this.credentials,
        forcePathStyle: needsPathStyle(bucket) || Boolean(process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3),
      });
      try {
        this.signed.set(id, await getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: withSlack(seconds) }));
      } finally {
        client.destroy();
      }
      this.wanted.delete(id);
    }
  }
}

/**
 * resolveJob, with `s3://` presigned inputs signed by the `--input-profile` signer (made once per run and shared by
 * a batch's subjects): a first reading finds what to sign, a second puts the signed URLs in.
 */
export async function resolveJobSigned(flags: SpecFlags, now: Date, extra: ResolveExtras, signer?: InputSigner): Promise<ResolvedJob> {
  const withSigner: ResolveExtras = signer ? { ...extra, presign: (url, seconds) => signer.sign(url, seconds, now) } : extra;
  let resolved = resolveJob(flags, now, withSigner);
  if (signer && signer.pending > 0) {
    await signer.signPending();
    resolved = resolveJob(flags, now, withSigner);
  }
  if (signer) resolved.warnings.push(...signer.warnings.filter((line) => !resolved.warnings.includes(line)));
  return resolved;
}

/** The run's signer, when `--input-profile` (or cloudcompute:inputProfile) names one. */
export async function inputSignerFor(flags: SpecFlags, regions?: RegionCache): Promise<InputSigner | undefined> {
  const profile = inputProfileOf(flags);
  return profile ? InputSigner.forProfile(profile, regions) : undefined;
}
