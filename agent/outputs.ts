/**
 * Outputs: upload the files of the output directory that match the spec's globs — one PutObject for a file up to a
 * part, multipart (parts in parallel) above — through one pool of requests shared by all files, so small files and a
 * big file's parts interleave. Each file is read once: its SHA-256 (for the manifest) and each part's SHA-256 (sent as
 * the part's checksum, which S3 verifies against the bytes it receives) come from the same buffers. The object is then
 * verified from the checksum S3 returns for it (full-object for one part, the checksum of part checksums for
 * multipart) — no read-back: the instance role may only write its results (an S3-compatible server that returns no
 * checksum has still checked the one sent with every request). Part sizes grow with the file so that any file fits in
 * S3's 10,000 parts.
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
import { promises as fsp, type Stats } from "node:fs";
import path from "node:path";
import picomatch from "picomatch";
import type { OutputObject } from "../job/records";
import { joinKey, type S3Location } from "../job/s3url";
import { errorMessage } from "../common/errors";
import { JobFailure } from "./errors";
import { isTransientError, mapLimit, withRetries } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import { setMaxListeners } from "node:events";

const MiB = 1024 * 1024;
const HASH_SLICE = 256 * 1024;

export interface UploadOptions {
  client?: S3Client;
  /** Told of each symbolic link left out (it leads outside the output directory). */
  onSkippedLink?: (link: SkippedLink) => void;
  /** Multipart part size (default 16 MiB; S3's minimum is 5 MiB). Files up to this size go in one PutObject. */
  partSize?: number;
  /** Parts of one file in flight (default 10). */
  queueSize?: number;
  /** Files in progress at once (default 16); they share the request pool. */
  fileConcurrency?: number;
  /** Requests in flight across all files (default 10, as the AWS CLI). Bounds memory: one part buffer per request. */
  concurrency?: number;
  /** Attempts per request, on top of the SDK's own retries (default 4). */
  attempts?: number;
  /** First backoff delay between attempts (default 500 ms). */
  retryBaseDelayMs?: number;
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  log?: (line: string) => void;
}

export interface LocalFile {
  /** Relative to the output directory, POSIX separators. */
  path: string;
  size: number;
}

/** An upload that failed part-way: `uploaded` lists the objects that did arrive and were verified. */
export class OutputUploadError extends JobFailure {
  constructor(
    message: string,
    readonly uploaded: OutputObject[],
  ) {
    super("output-upload-failed", message, "outputs");
  }
}

class IntegrityError extends Error {}

/** A symbolic link in the outputs that was not followed: it leads outside the output directory, or nowhere. */
export interface SkippedLink {
  path: string;
  target: string;
}

/**
 * Regular files under `dir` matching any of `globs` and none of the `!globs`. A symbolic link that resolves inside
 * `dir` is an output like any other (FreeSurfer's `surf/lh.white -> lh.white.preaparc`): uploaded under the link's
 * name with its target's content; a link to a directory inside is walked once (no cycles). A link that leads outside
 * `dir` (e.g. `fsaverage -> $FREESURFER_HOME/...`) or nowhere is never followed — it could reach host files — and is
 * reported through `onSkippedLink`, so the job says what it left out instead of dropping it silently.
 */
export async function listOutputFiles(dir: string, globs: string[], onSkippedLink?: (link: SkippedLink) => void): Promise<LocalFile[]> {
  // picomatch ORs a list of globs; "!glob" entries are exclusions here, as in .gitignore-style lists.
  const include = globs.filter((g) => !g.startsWith("!"));
  const exclude = globs.filter((g) => g.startsWith("!")).map((g) => g.slice(1));
  const included = picomatch(include.length ? include : ["**"], { dot: true });
  const excluded = exclude.length ? picomatch(exclude, { dot: true }) : () => false;
  const isMatch = (file: string) => included(file) && !excluded(file);
  const found: LocalFile[] = [];
  const root = await fsp.realpath(dir);
  const inside = (real: string) => real === root || real.startsWith(root + path.sep);
  // Directories on the current path, by real path: a link back to one of them is a cycle, walked no further. A link to
  // a directory elsewhere inside is listed under the link's name too, as a copy would have it.
  const walk = async (rel: string, ancestors: ReadonlySet<string> = new Set()): Promise<void> => {
    const real = await fsp.realpath(path.join(dir, rel));
    if (ancestors.has(real)) return;
    const here = new Set(ancestors).add(real);
    const entries = await fsp.readdir(path.join(dir, rel), { withFileTypes: true });
    for (const entry of entries) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child, here);
      else if (entry.isFile() && isMatch(child)) {
        found.push({ path: child, size: (await fsp.stat(path.join(dir, child))).size });
      } else if (entry.isSymbolicLink()) {
        const full = path.join(dir, child);
        const target = await fsp.readlink(full).catch(() => "?");
        const resolved = await fsp.realpath(full).catch(() => undefined);
        if (!resolved || !inside(resolved)) {
          if (isMatch(child)) onSkippedLink?.({ path: child, target });
          continue;
        }
        const stat = await fsp.stat(resolved);
        if (stat.isDirectory()) await walk(child, here);
        else if (stat.isFile() && isMatch(child)) found.push({ path: child, size: stat.size });
      }
    }
  };
  await walk("");
  return found.sort((a, b) => a.path.localeCompare(b.path));
}

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
class RequestPool {
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

interface FileUploadContext {
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

/** Upload one file to `dest` (bucket + full key) and verify it against the checksum S3 returns. */
async function uploadFile(localPath: string, dest: S3Location, ctx: FileUploadContext): Promise<OutputObject> {
  const object = `s3://${dest.bucket}/${dest.key}`;
  const retried = <T>(what: string, send: () => Promise<T>) =>
    withRetries(send, {
      attempts: ctx.attempts,
      baseDelayMs: ctx.retryBaseDelayMs,
      signal: ctx.signal,
      isRetryable: isTransientError,
      onRetry: (err, attempt, delay) =>
        ctx.log?.(`${what} of ${dest.key} failed (attempt ${attempt}: ${errorMessage(err)}); retrying in ${delay} ms`),
    });

  const uploadOnce = async (file: fsp.FileHandle, stat: Stats, counted: { bytes: number }): Promise<OutputObject> => {
    const size = stat.size;
    const confirm = (n: number) => {
      counted.bytes += n;
      ctx.onBytes(n);
    };
    if (size <= ctx.partSize) {
      await ctx.pool.acquire();
      try {
        ctx.signal?.throwIfAborted();
        const body = await readAt(file, 0, Buffer.allocUnsafe(size), localPath);
        const digest = sha256Of(body);
        const sent = digest.toString("base64");
        const res = await retried("upload", () =>
          ctx.client.send(
            unsignedPayload(
              new PutObjectCommand({ Bucket: dest.bucket, Key: dest.key, Body: body, ContentLength: size, ChecksumAlgorithm: "SHA256", ChecksumSHA256: sent }),
            ),
            { abortSignal: ctx.signal },
          ),
        );
        await verifyStored(res.ChecksumSHA256, sent);
        confirm(size);
        return { key: dest.key, size, sha256: digest.toString("hex") };
      } finally {
        ctx.pool.release();
      }
    }

    const created = await retried("CreateMultipartUpload", () =>
      ctx.client.send(new CreateMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, ChecksumAlgorithm: "SHA256" }), {
        abortSignal: ctx.signal,
      }),
    );
    const uploadId = created.UploadId!;
    const whole = createHash("sha256");
    const partHashes: Buffer[] = [];
    const parts: CompletedPart[] = [];
    const inflight = new Set<Promise<void>>();
    let failed: { error: unknown } | undefined;
    try {
      const partSize = partSizeFor(size, ctx.partSize);
      for (let partNumber = 1, offset = 0; offset < size && !failed; partNumber++, offset += partSize) {
        while (inflight.size >= ctx.queueSize) await Promise.race(inflight);
        if (failed) break;
        // The slot is taken before the part is read: buffers in memory stay within the pool's size.
        await ctx.pool.acquire();
        const length = Math.min(partSize, size - offset);
        // Full-size part buffers are reused: allocating 16 MiB per part costs page faults and garbage collections.
        const buffer = length === ctx.partSize ? (ctx.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(length)) : Buffer.allocUnsafe(length);
        const recycle = () => void (buffer.length === ctx.partSize && ctx.spareBuffers.push(buffer));
        let body: Buffer;
        try {
          ctx.signal?.throwIfAborted();
          body = await readAt(file, offset, buffer, localPath);
        } catch (err) {
          recycle();
          ctx.pool.release();
          throw err;
        }
        const digest = hashBoth(whole, body);
        partHashes.push(digest);
        const number = partNumber;
        const checksum = digest.toString("base64");
        const task = retried(`part ${number}`, () =>
          ctx.client.send(
            unsignedPayload(
              new UploadPartCommand({
                Bucket: dest.bucket,
                Key: dest.key,
                UploadId: uploadId,
                PartNumber: number,
                Body: body,
                ContentLength: body.length,
                ChecksumAlgorithm: "SHA256",
                ChecksumSHA256: checksum,
              }),
            ),
            { abortSignal: ctx.signal },
          ),
        )
          .then((res) => {
            if (res.ChecksumSHA256 !== undefined && res.ChecksumSHA256 !== checksum) {
              throw new IntegrityError(`${object} part ${number}: S3 computed SHA-256 ${res.ChecksumSHA256}, ${checksum} was sent`);
            }
            parts[number - 1] = { PartNumber: number, ETag: res.ETag, ChecksumSHA256: checksum };
            confirm(body.length);
          })
          .finally(() => {
            recycle();
            ctx.pool.release();
          });
        const tracked: Promise<void> = task
          .catch((error) => {
            failed ??= { error };
          })
          .finally(() => inflight.delete(tracked));
        inflight.add(tracked);
      }
      await Promise.all(inflight);
      if (failed) throw failed.error;
      if (parts.length !== partHashes.length) throw new IntegrityError(`${localPath} changed size while it was being uploaded`);
      const completed = await retried("CompleteMultipartUpload", () =>
        ctx.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: dest.bucket,
            Key: dest.key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
            // S3 refuses to complete an object of another size.
            MpuObjectSize: size,
          }),
          { abortSignal: ctx.signal },
        ),
      );
      // S3 appends "-<parts>" to multipart checksums; some S3-compatible servers do not.
      await verifyStored(completed.ChecksumSHA256?.replace(/-\d+$/, ""), expectedS3Sha256(partHashes));
      return { key: dest.key, size, sha256: whole.digest("hex") };
    } catch (err) {
      await Promise.allSettled(inflight);
      // Without this, S3 keeps (and bills) the uploaded parts.
      await ctx.client
        .send(new AbortMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: uploadId }))
        .catch((abortErr) => ctx.log?.(`warning: could not abort the multipart upload of ${dest.key}: ${errorMessage(abortErr)}`));
      throw err;
    }
  };

  /**
   * `stored` is what S3 returned. A server that returns nothing (moto after CompleteMultipartUpload) has still checked
   * the SHA-256 sent with every request body, refusing a mismatch: the object is not read back, which the job role
   * may not do (it may only write its results).
   */
  const verifyStored = async (stored: string | undefined, expected: string): Promise<void> => {
    if (stored === undefined) {
      ctx.log?.(`${dest.key}: the server returned no checksum; it checked the SHA-256 sent with each request`);
      return;
    }
    if (stored !== expected) throw new IntegrityError(`${object}: stored SHA-256 checksum ${stored} differs from the data sent (${expected})`);
  };

  // An integrity failure means the object is not what was read: upload the whole file again.
  return withRetries(
    async (attempt) => {
      const file = await fsp.open(localPath, "r");
      const counted = { bytes: 0 };
      try {
        const result = await uploadOnce(file, await file.stat(), counted);
        if (attempt > 1) ctx.log?.(`uploaded ${dest.key} on attempt ${attempt}`);
        return result;
      } catch (err) {
        ctx.onBytes(-counted.bytes); // this attempt's bytes will be sent again
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

/**
 * Upload the files of `dir` matching `globs` under `dest` (a key prefix) and return the verified objects. Failing,
 * it throws an OutputUploadError listing what did arrive.
 */
export async function uploadOutputs(dir: string, globs: string[], dest: S3Location, opts: UploadOptions = {}): Promise<OutputObject[]> {
  const files = await listOutputFiles(dir, globs, (link) => {
    opts.log?.(`not uploaded: ${link.path} is a symbolic link to ${link.target}, outside the output directory (or to nothing)`);
    opts.onSkippedLink?.(link);
  });
  const total = files.reduce((sum, file) => sum + file.size, 0);
  let done = 0;
  const concurrency = Math.max(1, opts.concurrency ?? 10);
  // Only an abort while uploading stops the upload: a job already past its deadline still gets its partial outputs up.
  const aborter = new AbortController();
  // Every request in flight listens on the signal; more than Node's default 10 is expected, not a leak.
  setMaxListeners(4 * concurrency + 16, aborter.signal);
  const onAbort = () => aborter.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort);
  const ctx: FileUploadContext = {
    client: opts.client ?? s3ClientFor(dest.bucket),
    pool: new RequestPool(concurrency),
    spareBuffers: [],
    partSize: Math.max(5 * MiB, opts.partSize ?? 16 * MiB),
    queueSize: Math.max(1, opts.queueSize ?? concurrency),
    attempts: opts.attempts ?? 4,
    retryBaseDelayMs: opts.retryBaseDelayMs ?? 500,
    signal: aborter.signal,
    log: opts.log,
    onBytes: (n) => {
      done += n;
      opts.onProgress?.(done, total);
    },
  };
  const uploaded: OutputObject[] = [];
  // Largest first, so a big file's parts are not left alone at the end.
  const ordered = [...files].sort((a, b) => b.size - a.size);
  try {
    await mapLimit(
      ordered,
      opts.fileConcurrency ?? 16,
      (file) => uploadFile(path.join(dir, file.path), { bucket: dest.bucket, key: joinKey(dest.key, file.path) }, ctx),
      (object) => uploaded.push(object),
    );
  } catch (err) {
    if (err instanceof JobFailure) throw err;
    const sorted = uploaded.sort((a, b) => a.key.localeCompare(b.key));
    throw new OutputUploadError(
      `output upload to s3://${dest.bucket}/${dest.key} failed after ${sorted.length} of ${files.length} file(s): ${errorMessage(err)}`,
      sorted,
    );
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
  opts.log?.(`uploaded ${files.length} file(s), ${total} bytes, to s3://${dest.bucket}/${dest.key}`);
  return uploaded.sort((a, b) => a.key.localeCompare(b.key));
}
