/**
 * `JobStaging`: puts the job's spec.json and (when not already there) the content-addressed agent bundle in S3
 * before the compute starts, after removing what an earlier launch under the job id left. Deleting it deletes
 * spec.json (it holds the job's secrets) and keeps the bundle.
 *
 * The provider functions are serialised into the state and run in the dynamic-provider plugin, so they are
 * self-contained: they require their modules inside, take every setting as an input and capture no credentials
 * (the plugin uses the default AWS credential chain and honours AWS_ENDPOINT_URL).
 */
import * as pulumi from "@pulumi/pulumi";
import { formatS3Url, needsPathStyle, S3Location } from "../job/s3url";

export interface StagingInputs {
  /** The spec as the agent reads it; a secret when it holds presigned URLs. */
  specJson: string;
  specBucket: string;
  specKey: string;
  agentBucket: string;
  agentKey: string;
  agentSha256: string;
  /** Absolute path of the bundle on the machine running `pulumi up`; read only when the bundle is not in S3 yet. */
  agentBundlePath: string;
  region: string;
  /** Legacy bucket names (capitals, underscores) only work path-style. */
  pathStyle: boolean;
  /**
   * Control objects an earlier launch under the same job id may have left (marker, status, provenance, logs): removed
   * before the spec is staged, so nothing of that launch can be read as this one's.
   */
  staleKeys: string[];
}

export interface StagingOutputs extends StagingInputs {
  specUrl: string;
  agentUrl: string;
  /** True when this job uploaded the bundle, false when an earlier job had. */
  agentUploaded: boolean;
}

/** Any change to what is staged means a new object set: replace, never update in place. */
const REPLACE_ON = ["specJson", "specBucket", "specKey", "agentBucket", "agentKey", "agentSha256", "region"] as const;

export const stagingProvider: pulumi.dynamic.ResourceProvider<StagingInputs, StagingOutputs> = {
  async create(inputs) {
    const { S3Client, PutObjectCommand, HeadObjectCommand } = require("@aws-sdk/client-s3") as typeof import("@aws-sdk/client-s3");
    const { createHash } = require("node:crypto") as typeof import("node:crypto");
    const { readFile } = require("node:fs/promises") as typeof import("node:fs/promises");
    const s3 = new S3Client({ region: inputs.region, forcePathStyle: inputs.pathStyle });
    const base64Sha256 = (body: Buffer) => createHash("sha256").update(body).digest("base64");

    let agentUploaded = false;
    // The key names the bundle's hash, but anybody who may write the prefix could have put other bytes there: the
    // object counts as present only when S3's stored SHA-256 is the bundle's. Otherwise it is (re)written.
    let storedSha256: string | undefined;
    try {
      const head = await s3.send(new HeadObjectCommand({ Bucket: inputs.agentBucket, Key: inputs.agentKey, ChecksumMode: "ENABLED" }));
      storedSha256 = head.ChecksumSHA256 ?? "none";
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status !== 404) throw err;
    }
    const expectedSha256 = Buffer.from(inputs.agentSha256, "hex").toString("base64");
    if (storedSha256 !== expectedSha256) {
      const bundle = await readFile(inputs.agentBundlePath);
      const actual = createHash("sha256").update(bundle).digest("hex");
      if (actual !== inputs.agentSha256) {
        throw new Error(`agent bundle ${inputs.agentBundlePath} changed since the program read it (sha256 ${actual}, expected ${inputs.agentSha256}): run the update again`);
      }
      // S3 verifies the checksum on receipt, so a corrupted upload is refused rather than stored.
      await s3.send(
        new PutObjectCommand({
          Bucket: inputs.agentBucket,
          Key: inputs.agentKey,
          Body: bundle,
          ContentType: "text/javascript",
          ChecksumSHA256: base64Sha256(bundle),
        }),
      );
      agentUploaded = true;
    }

    const { DeleteObjectCommand } = require("@aws-sdk/client-s3") as typeof import("@aws-sdk/client-s3");
    for (const key of inputs.staleKeys ?? []) {
      await s3.send(new DeleteObjectCommand({ Bucket: inputs.specBucket, Key: key }));
    }

    const spec = Buffer.from(inputs.specJson, "utf8");
    await s3.send(
      new PutObjectCommand({
        Bucket: inputs.specBucket,
        Key: inputs.specKey,
        Body: spec,
        ContentType: "application/json",
        ChecksumSHA256: base64Sha256(spec),
      }),
    );
    const specUrl = `s3://${inputs.specBucket}/${inputs.specKey}`;
    return {
      id: specUrl,
      outs: { ...inputs, specUrl, agentUrl: `s3://${inputs.agentBucket}/${inputs.agentKey}`, agentUploaded },
    };
  },

  async diff(_id, olds, news) {
    const replaces = REPLACE_ON.filter((key) => olds[key] !== news[key]);
    const changed = replaces.length > 0 || olds.agentBundlePath !== news.agentBundlePath || olds.pathStyle !== news.pathStyle;
    return { changes: changed, replaces, deleteBeforeReplace: false };
  },

  async update(_id, olds, news) {
    // Only the local bundle path or addressing style changed: nothing to upload again.
    return { outs: { ...olds, agentBundlePath: news.agentBundlePath, pathStyle: news.pathStyle } };
  },

  async delete(_id, props) {
    // spec.json holds the job's secrets (presigned URLs, env values): it goes when the job does — every version of
    // it, since on a versioned bucket a plain delete only hides it behind a delete marker. provenance.json, with the
    // redacted spec, is the record that stays; so does the content-addressed bundle other jobs share.
    // A replacement (a second `pulumi up` of the stack: a new launch) has already staged its own spec under the same
    // key by the time the old staging is deleted: that one, and its versions, are not ours to delete.
    const { S3Client, DeleteObjectCommand, GetObjectCommand, ListObjectVersionsCommand } = require("@aws-sdk/client-s3") as typeof import("@aws-sdk/client-s3");
    const s3 = new S3Client({ region: props.region, forcePathStyle: props.pathStyle });
    const Bucket = props.specBucket;
    const Key = props.specKey;
    const launchOf = (json: string): string | undefined => {
      try {
        return (JSON.parse(json) as { launchId?: string }).launchId;
      } catch {
        return undefined;
      }
    };
    const ours = launchOf(props.specJson);
    const isOurs = async (VersionId?: string): Promise<boolean | undefined> => {
      try {
        const stored = await s3.send(new GetObjectCommand({ Bucket, Key, VersionId }));
        const theirs = launchOf(await stored.Body!.transformToString());
        return !(ours && theirs && theirs !== ours);
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        return status === 404 ? undefined : true; // gone; or unreadable, which a delete settles either way
      }
    };
    let versions: Array<{ VersionId?: string }> | undefined;
    try {
      const listed = await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: Key }));
      versions = (listed.Versions ?? []).filter((v) => v.Key === Key);
    } catch {
      versions = undefined; // no versioning API (or no permission for it): the plain delete below
    }
    if (versions === undefined || versions.length === 0 || versions.every((v) => !v.VersionId || v.VersionId === "null")) {
      if ((await isOurs()) !== true) return;
      await s3.send(new DeleteObjectCommand({ Bucket, Key }));
      return;
    }
    for (const version of versions) {
      if ((await isOurs(version.VersionId)) !== true) continue;
      await s3.send(new DeleteObjectCommand({ Bucket, Key, VersionId: version.VersionId }));
    }
  },
};

export interface JobStagingArgs {
  specJson: pulumi.Input<string>;
  spec: S3Location;
  /** Keys in the spec's bucket to delete before staging (control objects of an earlier launch). */
  staleKeys: string[];
  agent: S3Location;
  agentSha256: string;
  agentBundlePath: string;
  region: string;
}

export class JobStaging extends pulumi.dynamic.Resource {
  declare readonly specUrl: pulumi.Output<string>;
  declare readonly agentUrl: pulumi.Output<string>;
  declare readonly agentUploaded: pulumi.Output<boolean>;

  constructor(name: string, args: JobStagingArgs, opts?: pulumi.CustomResourceOptions) {
    super(stagingProvider, name, stagingInputs(args), {
      ...opts,
      // The engine would copy an input's secretness to the output of the same name; say it outright as well.
      additionalSecretOutputs: ["specJson"],
    });
  }
}

/** The resource's inputs; exported so tests can check the spec stays secret when it must. */
export function stagingInputs(args: JobStagingArgs): pulumi.Inputs {
  return {
    specJson: args.specJson,
    specBucket: args.spec.bucket,
    specKey: args.spec.key,
    agentBucket: args.agent.bucket,
    agentKey: args.agent.key,
    agentSha256: args.agentSha256,
    agentBundlePath: args.agentBundlePath,
    region: args.region,
    pathStyle: needsPathStyle(args.spec.bucket),
    staleKeys: args.staleKeys,
    specUrl: undefined,
    agentUrl: formatS3Url(args.agent),
    agentUploaded: undefined,
  };
}
