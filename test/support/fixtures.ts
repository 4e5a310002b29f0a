/**
 * Test fixtures: the synthetic ABCD-like data (sandbox/abcd-data.ts) and S3 helpers on a moto server shared by the
 * test files of one process.
 */
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startMoto, type MotoServer } from "../../sandbox/moto";
export * from "../../sandbox/abcd-data";

let motoOnce: Promise<MotoServer> | undefined;

/** One moto server for the whole test process; its endpoint and dummy credentials go into process.env. */
export function sharedMoto(): Promise<MotoServer> {
  motoOnce ??= startMoto().then((moto) => {
    Object.assign(process.env, moto.env);
    return moto;
  });
  return motoOnce;
}

// A root-level hook (this module is loaded once, while mocha collects tests): stop the server after the whole run,
// or its child process keeps mocha alive.
if (typeof after === "function") {
  after(async () => {
    if (motoOnce) await (await motoOnce).stop();
  });
}

export function testS3(): S3Client {
  return new S3Client({ forcePathStyle: true, region: "us-east-1" });
}

let bucketCounter = 0;
export async function newBucket(s3: S3Client, prefix = "cc-agent"): Promise<string> {
  const bucket = `${prefix}-${process.pid}-${++bucketCounter}`.toLowerCase();
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

export async function put(s3: S3Client, bucket: string, key: string, body: Buffer | string, extra: Record<string, unknown> = {}): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...extra }));
}

export async function getBytes(s3: S3Client, bucket: string, key: string): Promise<Buffer> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

export async function getJson<T = any>(s3: S3Client, bucket: string, key: string): Promise<T> {
  return JSON.parse((await getBytes(s3, bucket, key)).toString("utf8")) as T;
}

export async function exists(s3: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await getBytes(s3, bucket, key);
    return true;
  } catch {
    return false;
  }
}

export async function listKeys(s3: S3Client, bucket: string, prefix = ""): Promise<string[]> {
  const res = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key!).sort();
}
