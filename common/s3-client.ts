/**
 * S3 clients for the agent and the driver: the default credential chain (the instance role on EC2), path-style addressing where a
 * bucket name needs it (legacy NDA buckets) or a custom endpoint is set, and an unsigned variant for public buckets.
 */
import { S3Client, S3ClientConfig } from "@aws-sdk/client-s3";
import { needsPathStyle } from "../job/s3url";

export interface S3ClientOptions {
  region?: string;
  /** Read public buckets without signing (and without needing any credentials). */
  anonymous?: boolean;
  maxAttempts?: number;
  /** "adaptive" (default) also slows the client down after throttling; a poller that retries itself wants "standard". */
  retryMode?: "standard" | "adaptive";
}

const clients = new Map<string, S3Client>();

export function defaultRegion(): string {
  return process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
}

/** A (cached) client suitable for `bucket`. */
export function s3ClientFor(bucket: string, opts: S3ClientOptions = {}): S3Client {
  // A custom endpoint (local S3-compatible server) cannot take bucket subdomains; AWS itself needs path style only
  // for names that are not DNS labels.
  const pathStyle = needsPathStyle(bucket) || Boolean(process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3);
  const region = opts.region ?? defaultRegion();
  const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? "";
  const cacheKey = JSON.stringify([pathStyle, region, Boolean(opts.anonymous), opts.maxAttempts ?? 0, opts.retryMode ?? "adaptive", endpoint]);
  let client = clients.get(cacheKey);
  if (!client) {
    const config: S3ClientConfig = {
      region,
      forcePathStyle: pathStyle,
      followRegionRedirects: true,
      maxAttempts: opts.maxAttempts ?? 6,
      retryMode: opts.retryMode ?? "adaptive",
    };
    if (opts.anonymous) {
      // No signature and no credential lookup: public objects need neither.
      config.signer = { sign: async (request) => request };
      config.credentials = { accessKeyId: "", secretAccessKey: "" };
    }
    client = new S3Client(config);
    clients.set(cacheKey, client);
  }
  return client;
}
