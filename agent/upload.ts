/**
 * Upload of one file, verified: one PutObject for a file up to a part, multipart (parts in parallel) above, through a
 * request pool shared with the other files. The file is read once: its SHA-256 (for the manifest) and each part's
 * SHA-256 (sent as the part's checksum, which S3 verifies against the bytes it receives) come from the same buffers.
 * The object is then verified from the checksum S3 returns for it — no read-back: the instance role may only write.
 * Part sizes grow with the file so that any file fits in S3's 10,000 parts.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from "@aws-sdk/client-s3";
import { createHash, type Hash } from "node:crypto";
import { promises as fsp } from "node:fs";
import type { OutputObject } from "../job/records";
import type { S3Location } from "../job/s3url";
import { errorMessage } from "../common/errors";
import { isTransientError, withRetries } from "../common/retry";

const MiB = 1024 * 1024;
const HASH_SLICE = 256 * 1024;

/** S3 takes at most 10,000 parts per upload. */
export const MAX_PARTS = 10_000;

/** The part size for a file: the configured one, grown (in whole MiB) so the file fits in 10,000 parts. */
export function partSizeFor(size: number, configured: number): number {
  const needed = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  return Math.max(configured, needed);
}

/** The ChecksumSHA256 S3 reports for an object uploaded in parts of `partHashes` (one part: the plain hash). */
export function expectedS3Sha256(partHashes: Buffer[]): string {
  if (partHashes.length === 1) return partHashes[0].toString("base64");
  return createHash("sha256").update(Buffer.concat(partHashes)).digest("base64");
}

/** Request slots handed out first come, first served. */
export class RequestPool {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly size: number) {}
  acquire(): Promise<void> {
    if (this.active < this.size) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

/** What the uploads of one batch share. */
export interface FileUploadContext {
  client: S3Client;
  pool: RequestPool;
  /** Part buffers no request uses any more. */
  spareBuffers: Buffer[];
  partSize: number;
  queueSize: number;
  attempts: number;
  retryBaseDelayMs: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Bytes confirmed by S3 since the last call; negative when a failed attempt's bytes are sent again. */
  onBytes: (delta: number) => void;
}

/** The object differs from the file as read: the whole file is uploaded again. */
class IntegrityError extends Error {}

/** One attempt at uploading one file. */
interface FileAttempt {
  file: fsp.FileHandle;
  localPath: string;
  size: number;
  dest: S3Location;
  /** Bytes S3 confirmed in this attempt, taken back from the progress if it fails. */
  confirmed: number;
}

/** Upload one file to `dest` (bucket + full key) and verify it against the checksum S3 returns. */
export function uploadFile(localPath: string, dest: S3Location, ctx: FileUploadContext): Promise<OutputObject> {
  // An integrity failure means the object is not what was read: upload the whole file again.
  return withRetries(
    async (attempt) => {
      const file = await fsp.open(localPath, "r");
      const current: FileAttempt = { file, localPath, size: 0, dest, confirmed: 0 };
      try {
        current.size = (await file.stat()).size;
        const result = current.size <= ctx.partSize ? await putWhole(ctx, current) : await putInParts(ctx, current);
        if (attempt > 1) ctx.log?.(`uploaded ${dest.key} on attempt ${attempt}`);
        return result;
      } catch (err) {
        ctx.onBytes(-current.confirmed); // this attempt's bytes will be sent again
        throw err;
      } finally {
        await file.close();
      }
    },
    {
      attempts: ctx.attempts,
      baseDelayMs: ctx.retryBaseDelayMs,
      signal: ctx.signal,
      isRetryable: (err) => err instanceof IntegrityError,
      onRetry: (err, attempt, delay) => ctx.log?.(`upload of ${dest.key} failed (attempt ${attempt}: ${errorMessage(err)}); retrying in ${delay} ms`),
    },
  );
}

/** One request, retried on transient errors on top of the SDK's own retries. */
function withRequestRetries<T>(ctx: FileUploadContext, what: string, key: string, send: () => Promise<T>): Promise<T> {
  return withRetries(send, {
    attempts: ctx.attempts,
    baseDelayMs: ctx.retryBaseDelayMs,
    signal: ctx.signal,
    isRetryable: isTransientError,
    onRetry: (err, attempt, delay) => ctx.log?.(`${what} of ${key} failed (attempt ${attempt}: ${errorMessage(err)}); retrying in ${delay} ms`),
  });
}

function confirm(ctx: FileUploadContext, current: FileAttempt, bytes: number): void {
  current.confirmed += bytes;
  ctx.onBytes(bytes);
}

/** A file up to one part: a single PutObject. */
async function putWhole(ctx: FileUploadContext, current: FileAttempt): Promise<OutputObject> {
  const { dest, size } = current;
  await ctx.pool.acquire();
  try {
    ctx.signal?.throwIfAborted();
    const body = await readAt(current.file, 0, Buffer.allocUnsafe(size), current.localPath);
    const digest = sha256Of(body);
    const sent = digest.toString("base64");
    const res = await withRequestRetries(ctx, "upload", dest.key, () =>
      ctx.client.send(
        unsignedPayload(
          new PutObjectCommand({ Bucket: dest.bucket, Key: dest.key, Body: body, ContentLength: size, ChecksumAlgorithm: "SHA256", ChecksumSHA256: sent }),
        ),
        { abortSignal: ctx.signal },
      ),
    );
    verifyStored(ctx, dest, res.ChecksumSHA256, sent);
    confirm(ctx, current, size);
    return { key: dest.key, size, sha256: digest.toString("hex") };
  } finally {
    ctx.pool.release();
  }
}

/** A multipart upload in progress. */
interface Multipart {
  uploadId: string;
  /** SHA-256 of the whole file, fed part by part. */
  whole: Hash;
  partHashes: Buffer[];
  parts: CompletedPart[];
  inflight: Set<Promise<void>>;
}

/** A file above one part: parts in parallel, then CompleteMultipartUpload; aborted on failure. */
async function putInParts(ctx: FileUploadContext, current: FileAttempt): Promise<OutputObject> {
  const { dest, size } = current;
  const created = await withRequestRetries(ctx, "CreateMultipartUpload", dest.key, () =>
    ctx.client.send(new CreateMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, ChecksumAlgorithm: "SHA256" }), {
      abortSignal: ctx.signal,
    }),
  );
  const upload: Multipart = { uploadId: created.UploadId!, whole: createHash("sha256"), partHashes: [], parts: [], inflight: new Set() };
  try {
    await sendParts(ctx, current, upload);
    if (upload.parts.length !== upload.partHashes.length) throw new IntegrityError(`${current.localPath} changed size while it was being uploaded`);
    const completed = await withRequestRetries(ctx, "CompleteMultipartUpload", dest.key, () =>
      ctx.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: dest.bucket,
          Key: dest.key,
          UploadId: upload.uploadId,
          MultipartUpload: { Parts: upload.parts },
          // S3 refuses to complete an object of another size.
          MpuObjectSize: size,
        }),
        { abortSignal: ctx.signal },
      ),
    );
    // S3 appends "-<parts>" to multipart checksums; some S3-compatible servers do not.
    verifyStored(ctx, dest, completed.ChecksumSHA256?.replace(/-\d+$/, ""), expectedS3Sha256(upload.partHashes));
    return { key: dest.key, size, sha256: upload.whole.digest("hex") };
  } catch (err) {
    await Promise.allSettled(upload.inflight);
    // Without this, S3 keeps (and bills) the uploaded parts.
    await ctx.client
      .send(new AbortMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: upload.uploadId }))
      .catch((abortErr) => ctx.log?.(`warning: could not abort the multipart upload of ${dest.key}: ${errorMessage(abortErr)}`));
    throw err;
  }
}

/** Read and send every part, at most `queueSize` in flight; the first part that fails stops the reading and is thrown. */
async function sendParts(ctx: FileUploadContext, current: FileAttempt, upload: Multipart): Promise<void> {
  const { size } = current;
  const partSize = partSizeFor(size, ctx.partSize);
  let failed: { error: unknown } | undefined;
  for (let partNumber = 1, offset = 0; offset < size && !failed; partNumber++, offset += partSize) {
    while (upload.inflight.size >= ctx.queueSize) await Promise.race(upload.inflight);
    if (failed) break;
    const body = await readPart(ctx, current, offset, Math.min(partSize, size - offset));
    const digest = hashBoth(upload.whole, body);
    upload.partHashes.push(digest);
    const tracked: Promise<void> = sendPart(ctx, current, upload, partNumber, body, digest)
      .catch((error) => {
        failed ??= { error };
      })
      .finally(() => upload.inflight.delete(tracked));
    upload.inflight.add(tracked);
  }
  await Promise.all(upload.inflight);
  if (failed) throw failed.error;
}

/**
 * A part's bytes in a part buffer. The request slot is taken before the part is read, so buffers in memory stay within
 * the pool's size; `releasePart` hands both back.
 */
async function readPart(ctx: FileUploadContext, current: FileAttempt, offset: number, length: number): Promise<Buffer> {
  await ctx.pool.acquire();
  // Full-size part buffers are reused: allocating 16 MiB per part costs page faults and garbage collections.
  const buffer = length === ctx.partSize ? (ctx.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(length)) : Buffer.allocUnsafe(length);
  try {
    ctx.signal?.throwIfAborted();
    return await readAt(current.file, offset, buffer, current.localPath);
  } catch (err) {
    releasePart(ctx, buffer);
    throw err;
  }
}

function releasePart(ctx: FileUploadContext, buffer: Buffer): void {
  if (buffer.length === ctx.partSize) ctx.spareBuffers.push(buffer);
  ctx.pool.release();
}

/** Upload one part and check the checksum S3 computed for it. */
async function sendPart(ctx: FileUploadContext, current: FileAttempt, upload: Multipart, number: number, body: Buffer, digest: Buffer): Promise<void> {
  const { dest } = current;
  const checksum = digest.toString("base64");
  try {
    const res = await withRequestRetries(ctx, `part ${number}`, dest.key, () =>
      ctx.client.send(
        unsignedPayload(
          new UploadPartCommand({
            Bucket: dest.bucket,
            Key: dest.key,
            UploadId: upload.uploadId,
            PartNumber: number,
            Body: body,
            ContentLength: body.length,
            ChecksumAlgorithm: "SHA256",
            ChecksumSHA256: checksum,
          }),
        ),
        { abortSignal: ctx.signal },
      ),
    );
    if (res.ChecksumSHA256 !== undefined && res.ChecksumSHA256 !== checksum) {
      throw new IntegrityError(`s3://${dest.bucket}/${dest.key} part ${number}: S3 computed SHA-256 ${res.ChecksumSHA256}, ${checksum} was sent`);
    }
    upload.parts[number - 1] = { PartNumber: number, ETag: res.ETag, ChecksumSHA256: checksum };
    confirm(ctx, current, body.length);
  } finally {
    releasePart(ctx, body);
  }
}

/**
 * `stored` is what S3 returned. A server that returns nothing (moto after CompleteMultipartUpload) has still checked
 * the SHA-256 sent with every request body, refusing a mismatch: the object is not read back, which the job role
 * may not do (it may only write its results).
 */
function verifyStored(ctx: FileUploadContext, dest: S3Location, stored: string | undefined, expected: string): void {
  if (stored === undefined) {
    ctx.log?.(`${dest.key}: the server returned no checksum; it checked the SHA-256 sent with each request`);
    return;
  }
  if (stored !== expected) throw new IntegrityError(`s3://${dest.bucket}/${dest.key}: stored SHA-256 checksum ${stored} differs from the data sent (${expected})`);
}

/**
 * Send the payload unsigned (`x-amz-content-sha256: UNSIGNED-PAYLOAD`): the request still carries the SHA-256 checksum
 * header, which S3 verifies, so signing would only hash every byte once more.
 */
function unsignedPayload<C extends PutObjectCommand | UploadPartCommand>(command: C): C {
  // Both commands have the same stack; one of their types is enough to add a build step.
  (command.middlewareStack as PutObjectCommand["middlewareStack"]).add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
      return next(args);
    },
    { step: "build", name: "cloudcomputeUnsignedPayload" },
  );
  return command;
}

const sha256Of = (data: Buffer) => createHash("sha256").update(data).digest();

async function readAt(file: fsp.FileHandle, position: number, buffer: Buffer, localPath: string): Promise<Buffer> {
  for (let done = 0; done < buffer.length; ) {
    const { bytesRead } = await file.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new IntegrityError(`${localPath} shrank while it was being uploaded`);
    done += bytesRead;
  }
  return buffer;
}

/** SHA-256 of the whole file and of one part in one pass over `data`: each slice is hashed twice while in cache. */
function hashBoth(whole: Hash, data: Buffer): Buffer {
  const part = createHash("sha256");
  for (let offset = 0; offset < data.length; offset += HASH_SLICE) {
    const slice = data.subarray(offset, offset + HASH_SLICE);
    whole.update(slice);
    part.update(slice);
  }
  return part.digest();
}
