/**
 * Where an input's bytes come from: an S3 object (read with the instance role, or unsigned from a public bucket) or a
 * presigned HTTPS URL, each opened once for its size and then read by byte range. Failures become JobFailures naming
 * the reason (missing, expired, changed while read); transient ones are left to the caller's retries.
 */
import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Readable } from "node:stream";
import { parseS3Url } from "../job/s3url";
import { redactUrl, type InputSpec } from "../job/spec";
import { presignedExpiry } from "../job/presigned";
import { errorMessage } from "../common/errors";
import { httpStatusOf, withRetries } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import { JobFailure } from "./errors";

export interface ObjectInfo {
  size: number;
  etag?: string;
  /** A full-object SHA-256 checksum (base64) the server stores, if any. */
  checksumSha256?: string;
}

/** What opening an object told, with any of its bytes that came along. */
export interface OpenedObject extends ObjectInfo {
  /** The object's first bytes: a presigned URL cannot be HEADed, so its size comes from a first ranged GET. */
  first?: Buffer;
  /** The whole object as one stream, when the server ignored the Range header: there are no ranges to read. */
  whole?: Readable;
}

/** Ranged reads of one object. `open` fails with a JobFailure naming the reason (missing, expired, ...). */
export interface RangeSource {
  open(signal?: AbortSignal): Promise<OpenedObject>;
  /** The bytes, in `into` (its length is the range's) where the source can fill it in place. */
  readRange(start: number, endInclusive: number, etag: string | undefined, signal: AbortSignal | undefined, into: Buffer): Promise<Buffer>;
}

/** The source for `input`: presigned over HTTPS, a public bucket unsigned, else S3 with `client` (or the agent's own). */
export function inputSource(input: InputSpec, label: string, partSize: number, client?: S3Client): RangeSource {
  if (input.access === "presigned") return presignedSource(label, input.url, partSize);
  const { bucket } = parseS3Url(input.url);
  return s3Source(label, input.url, input.access === "public" ? s3ClientFor(bucket, { anonymous: true }) : (client ?? s3ClientFor(bucket)));
}

function s3Source(label: string, url: string, client: S3Client): RangeSource {
  const { bucket, key } = parseS3Url(url);
  const fail = (err: unknown): never => {
    const status = httpStatusOf(err);
    const name = (err as { name?: string }).name ?? "";
    if (status === 404 || /NotFound|NoSuchKey|NoSuchBucket/.test(name)) {
      throw new JobFailure("missing-input", `${label}: ${url} does not exist (${name || status})`);
    }
    if (status === 403 || /AccessDenied|Forbidden/.test(name)) {
      throw new JobFailure("missing-input", `${label}: access to ${url} denied (HTTP 403)`);
    }
    if (status === 412) throw new JobFailure("input-integrity", `${label}: ${url} changed while it was being read`);
    throw new JobFailure("missing-input", `${label}: ${url} could not be read: ${errorMessage(err)}`);
  };
  return {
    async open(signal) {
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: "ENABLED" }), {
          abortSignal: signal,
        });
        const fullObject = head.ChecksumSHA256 && !head.ChecksumSHA256.includes("-") && head.ChecksumType !== "COMPOSITE";
        return {
          size: head.ContentLength ?? 0,
          etag: head.ETag,
          checksumSha256: fullObject ? head.ChecksumSHA256 : undefined,
        };
      } catch (err) {
        return fail(err);
      }
    },
    async readRange(start, end, etag, signal, into) {
      try {
        const res = await client.send(
          new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end}`, IfMatch: etag }),
          { abortSignal: signal },
        );
        if (res.Body instanceof Readable) return await collectInto(res.Body, into);
        const bytes = await res.Body!.transformToByteArray();
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      } catch (err) {
        if (isRetryableRead(err)) throw err;
        return fail(err);
      }
    },
  };
}

/**
 * A response body copied straight into one buffer of the expected size (shorter if the body is): the SDK's
 * `transformToByteArray` copies every byte twice more, and the garbage of those copies slows the whole download.
 */
function collectInto(body: Readable, buffer: Buffer): Promise<Buffer> {
  const length = buffer.length;
  let filled = 0;
  return new Promise((resolve, reject) => {
    body.on("data", (chunk: Buffer) => {
      if (filled + chunk.length > length) {
        body.destroy(Object.assign(new Error(`body longer than the ${length} bytes asked for`), { code: "ECONNRESET" }));
        return;
      }
      chunk.copy(buffer, filled);
      filled += chunk.length;
    });
    body.once("error", reject);
    body.once("end", () => resolve(filled === length ? buffer : buffer.subarray(0, filled)));
    // An aborted request may close the body without an error; after "end" this rejects nothing.
    body.once("close", () => reject(Object.assign(new Error("response body closed early"), { code: "ECONNRESET" })));
  });
}

function isRetryableRead(err: unknown): boolean {
  const status = httpStatusOf(err);
  return status === undefined || status === 429 || status >= 500;
}

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function presignedSource(label: string, url: string, partSize: number): RangeSource {
  const shown = redactUrl(url);
  const failFor = async (res: Response): Promise<never> => {
    const body = (await res.text().catch(() => "")).slice(0, 4000);
    const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
    const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
    const detail = [code, message].filter(Boolean).join(": ") || res.statusText;
    const expiry = presignedExpiry(url);
    const expiredByClock = expiry !== undefined && expiry.getTime() <= Date.now();
    if (
      /Request has expired|ExpiredToken|token has expired/i.test(body) ||
      (res.status === 403 && expiredByClock)
    ) {
      const when = expiry ? ` at ${expiry.toISOString()}` : "";
      throw new JobFailure(
        "presigned-url-expired",
        `${label}: presigned URL expired${when} (HTTP ${res.status} ${detail}) for ${shown}; ask for a fresh URL`,
      );
    }
    if (res.status === 404) throw new JobFailure("missing-input", `${label}: ${shown} does not exist (HTTP 404 ${detail})`);
    if (res.status === 412) throw new JobFailure("input-integrity", `${label}: ${shown} changed while it was being read`);
    if (res.status === 429 || res.status >= 500) throw new HttpStatusError(res.status, `HTTP ${res.status} ${detail}`);
    throw new JobFailure("missing-input", `${label}: ${shown} could not be read (HTTP ${res.status} ${detail})`);
  };
  return {
    async open(signal) {
      // A presigned GET URL cannot be used for HEAD (the method is signed): the first range tells the size.
      const res = await withRetries(
        async () => {
          const r = await fetch(url, { headers: { Range: `bytes=0-${partSize - 1}` }, signal });
          if (r.status === 416) return r; // empty object
          if (!r.ok) await failFor(r);
          return r;
        },
        { signal },
      ).catch((err) => {
        if (err instanceof JobFailure) throw err;
        throw new JobFailure("missing-input", `${label}: ${shown} could not be read: ${errorMessage(err)}`);
      });
      const etag = res.headers.get("etag") ?? undefined;
      if (res.status === 416) {
        await res.body?.cancel();
        return { size: 0, etag };
      }
      if (res.status === 206) {
        const total = /\/(\d+)$/.exec(res.headers.get("content-range") ?? "")?.[1];
        const first = Buffer.from(await res.arrayBuffer());
        return { size: total ? Number(total) : first.length, etag, first };
      }
      // The server ignored the range: take the whole body as one stream.
      const whole = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
      return { size: Number(res.headers.get("content-length") ?? NaN), etag, whole };
    },
    async readRange(start, end, etag, signal) {
      const headers: Record<string, string> = { Range: `bytes=${start}-${end}` };
      if (etag) headers["If-Match"] = etag;
      const res = await fetch(url, { headers, signal });
      if (res.status !== 206) await failFor(res);
      return Buffer.from(await res.arrayBuffer());
    },
  };
}
