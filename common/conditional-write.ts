/**
 * Compare-and-swap on one S3 object (Terraform's S3 backend locks the same way): a JSON document written only if the
 * object is still the version the writer read. Shared by the subject's run lease (common/lease.ts) and the results
 * pointer that is also the promotion lease (agent/promote.ts).
 */
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { S3Location } from "../job/s3url";
import { httpStatusOf, withRetries } from "./retry";

/** 412: the object changed since it was read; 409: a concurrent conditional write to the same key won. */
export const isWriteConflict = (err: unknown): boolean => [409, 412].includes(httpStatusOf(err) ?? 0);

/**
 * Write `value` as JSON to `loc` only if the object's ETag is still `expected` (undefined: only if there is none).
 * The new ETag, or "conflict" when another writer got there first.
 */
export async function putJsonIfUnchanged(
  client: S3Client,
  loc: S3Location,
  value: unknown,
  expected: string | undefined,
  attempts: number,
  /** Per request: a connection that accepts and never answers must not stall the writer (a lease's renewal). */
  timeoutMs?: number,
): Promise<string | "conflict"> {
  try {
    const res = await withRetries(
      () =>
        client.send(
          new PutObjectCommand({
            Bucket: loc.bucket,
            Key: loc.key,
            Body: JSON.stringify(value, null, 2) + "\n",
            ContentType: "application/json",
            ...(expected ? { IfMatch: expected } : { IfNoneMatch: "*" }),
          }),
          timeoutMs === undefined ? undefined : { abortSignal: AbortSignal.timeout(timeoutMs) },
        ),
      { attempts },
    );
    return res.ETag ?? "";
  } catch (err) {
    if (isWriteConflict(err)) return "conflict";
    throw err;
  }
}
