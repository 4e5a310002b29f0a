/** The few S3 reads the driver makes: the agent's status, marker and log. */
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { httpStatusOf } from "../agent/retry";
import { s3ClientFor } from "../agent/s3";
import type { S3Location } from "../job/s3url";

function isMissing(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  return name === "NoSuchKey" || name === "NotFound" || httpStatusOf(err) === 404;
}

/** The object's text, or undefined when it does not exist (yet). `fromByte` reads only the rest of it. */
export async function readText(loc: S3Location, fromByte = 0): Promise<string | undefined> {
  try {
    const res = await s3ClientFor(loc.bucket).send(
      new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key, Range: fromByte > 0 ? `bytes=${fromByte}-` : undefined }),
    );
    return (await res.Body?.transformToString("utf8")) ?? "";
  } catch (err) {
    if (isMissing(err)) return undefined;
    if (httpStatusOf(err) === 416) return ""; // nothing new
    throw err;
  }
}

export async function readJson<T>(loc: S3Location): Promise<T | undefined> {
  const text = await readText(loc);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined; // caught mid-write by a non-atomic server: read again next poll
  }
}
