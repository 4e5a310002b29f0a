/** The few S3 reads the driver makes: the agent's status, marker and log. */
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { httpStatusOf } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import type { S3Location } from "../job/s3url";

function isMissing(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  return name === "NoSuchKey" || name === "NotFound" || httpStatusOf(err) === 404;
}

/** The object's text, or undefined when it does not exist (yet). `fromByte` reads only the rest of it. */
export async function readText(loc: S3Location, fromByte = 0): Promise<string | undefined> {
  try {
    // Few SDK attempts: a poll that fails comes round again on the next poll (driver/wait.ts), and a read stuck in
    // the SDK's backoff would hold the whole wait, Ctrl-C included.
    const res = await s3ClientFor(loc.bucket, { maxAttempts: 2, retryMode: "standard" }).send(
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

/** A record (marker, status) parsed with its schema; undefined when missing or not a valid record of that kind. */
export async function readRecord<T>(loc: S3Location, parse: (value: unknown) => T | undefined): Promise<T | undefined> {
  const value = await readJson<unknown>(loc);
  return value === undefined ? undefined : parse(value);
}
