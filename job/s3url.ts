/**
 * S3 URLs (`s3://bucket/key`).
 *
 * Legacy buckets with capitals and underscores are real (NDA's `NDAR_Central_2`), so the bucket check accepts them;
 * such buckets need path-style addressing (`needsPathStyle`).
 */

export interface S3Location {
  bucket: string;
  key: string;
}

const LEGACY_BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/;
const DNS_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseS3Url(url: string): S3Location {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!match) throw new Error(`"${url}" is not an S3 URL: expected s3://bucket/key`);
  const [, bucket, key = ""] = match;
  if (!LEGACY_BUCKET.test(bucket)) {
    throw new Error(`"${url}" has an invalid bucket name "${bucket}": 2-255 letters, digits, '.', '_' or '-'`);
  }
  return { bucket, key };
}

export function formatS3Url(loc: S3Location): string {
  return `s3://${loc.bucket}/${loc.key}`;
}

/** Buckets that are not valid DNS labels (capitals, underscores, dots) must be addressed path-style. */
export function needsPathStyle(bucket: string): boolean {
  return !DNS_BUCKET.test(bucket) || bucket.includes(".") || bucket.includes("..");
}

/** Join key segments with single slashes, ignoring empty segments and stray slashes. */
export function joinKey(...parts: string[]): string {
  return parts
    .flatMap((part) => part.split("/"))
    .filter((segment) => segment.length > 0)
    .join("/");
}
