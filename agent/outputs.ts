/**
 * Outputs: upload the files of the output directory that match the spec's globs with parallel multipart uploads
 * (@aws-sdk/lib-storage), retried with backoff, and verify each object after upload: its size, and its SHA-256
 * checksum as S3 stores it (full-object for one part, the checksum of part checksums for multipart) against the
 * hashes computed while the file was read.
 */
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createHash, Hash } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import path from "node:path";
import { Transform } from "node:stream";
import picomatch from "picomatch";
import type { OutputObject } from "../job/records";
import { joinKey, type S3Location } from "../job/s3url";
import { errorMessage, isOutOfDisk, JobFailure } from "./errors";
import { isTransientError, mapLimit, withRetries } from "./retry";
import { s3ClientFor } from "./s3";

const MiB = 1024 * 1024;

export interface UploadOptions {
  client?: S3Client;
  /** Multipart part size (default 16 MiB; S3's minimum is 5 MiB). Files up to this size go in one PutObject. */
  partSize?: number;
  /** Parts in flight per file (default 4). */
  queueSize?: number;
  /** Files uploaded at once (default 8). */
  fileConcurrency?: number;
  /** Attempts per file, on top of the SDK's per-request retries (default 4). */
  attempts?: number;
  /** First backoff delay between file attempts (default 500 ms). */
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

/** Regular files under `dir` matching any of `globs` and none of the `!globs` (symbolic links are skipped: they may point at host files). */
export async function listOutputFiles(dir: string, globs: string[]): Promise<LocalFile[]> {
  // picomatch ORs a list of globs; "!glob" entries are exclusions here, as in .gitignore-style lists.
  const include = globs.filter((g) => !g.startsWith("!"));
  const exclude = globs.filter((g) => g.startsWith("!")).map((g) => g.slice(1));
  const included = picomatch(include.length ? include : ["**"], { dot: true });
  const excluded = exclude.length ? picomatch(exclude, { dot: true }) : () => false;
  const isMatch = (file: string) => included(file) && !excluded(file);
  const found: LocalFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fsp.readdir(path.join(dir, rel), { withFileTypes: true });
    for (const entry of entries) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child);
      else if (entry.isFile() && isMatch(child)) {
        found.push({ path: child, size: (await fsp.stat(path.join(dir, child))).size });
      }
    }
  };
  await walk("");
  return found.sort((a, b) => a.path.localeCompare(b.path));
}

/** The ChecksumSHA256 S3 reports for an object uploaded in parts of `partHashes` (one part: the plain hash). */
export function expectedS3Sha256(partHashes: Buffer[]): string {
  if (partHashes.length === 1) return partHashes[0].toString("base64");
  return createHash("sha256").update(Buffer.concat(partHashes)).digest("base64");
}

/** Hashes a stream as it passes: the whole (hex) and per part, with the part boundaries lib-storage uses. */
class PartHasher extends Transform {
  readonly whole = createHash("sha256");
  readonly parts: Buffer[] = [];
  bytes = 0;
  private part: Hash = createHash("sha256");
  private filled = 0;
  constructor(
    private readonly partSize: number,
    private readonly onBytes: (n: number) => void,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null, data?: Buffer) => void): void {
    this.whole.update(chunk);
    this.bytes += chunk.length;
    for (let offset = 0; offset < chunk.length; ) {
      const take = Math.min(this.partSize - this.filled, chunk.length - offset);
      this.part.update(chunk.subarray(offset, offset + take));
      this.filled += take;
      offset += take;
      if (this.filled === this.partSize) {
        this.parts.push(this.part.digest());
        this.part = createHash("sha256");
        this.filled = 0;
      }
    }
    this.onBytes(chunk.length);
    callback(null, chunk);
  }
  override _flush(callback: (err?: Error | null) => void): void {
    if (this.filled > 0 || this.parts.length === 0) this.parts.push(this.part.digest());
    callback();
  }
}

/** Upload one file to `dest` (bucket + full key) and verify it; retried as a whole on transient errors. */
export async function uploadFile(
  localPath: string,
  dest: S3Location,
  opts: UploadOptions & { /** Bytes read since the last call; negative when a failed attempt's bytes are resent. */ onBytes?: (delta: number) => void } = {},
): Promise<OutputObject> {
  const client = opts.client ?? s3ClientFor(dest.bucket);
  const partSize = Math.max(5 * MiB, opts.partSize ?? 16 * MiB);
  return withRetries(
    async (attempt) => {
      let counted = 0;
      const hasher = new PartHasher(partSize, (n) => {
        counted += n;
        opts.onBytes?.(n);
      });
      const body = createReadStream(localPath, { highWaterMark: MiB }).on("error", (err) => hasher.destroy(err));
      const upload = new Upload({
        client,
        params: { Bucket: dest.bucket, Key: dest.key, Body: body.pipe(hasher), ChecksumAlgorithm: "SHA256" },
        partSize,
        queueSize: opts.queueSize ?? 4,
        leavePartsOnError: false,
      });
      const onAbort = () => void upload.abort().catch(() => undefined);
      opts.signal?.addEventListener("abort", onAbort);
      try {
        await upload.done();
      } catch (err) {
        opts.onBytes?.(-counted); // this attempt's bytes will be sent again
        throw err;
      } finally {
        opts.signal?.removeEventListener("abort", onAbort);
      }
      const sha256 = hasher.whole.digest("hex");
      const head = await client.send(new HeadObjectCommand({ Bucket: dest.bucket, Key: dest.key, ChecksumMode: "ENABLED" }));
      if (head.ContentLength !== hasher.bytes) {
        throw new IntegrityError(`s3://${dest.bucket}/${dest.key} has ${head.ContentLength} bytes, ${hasher.bytes} were sent`);
      }
      // S3 appends "-<parts>" to multipart checksums; some S3-compatible servers do not.
      const stored = head.ChecksumSHA256?.replace(/-\d+$/, "");
      if (stored !== undefined && stored !== expectedS3Sha256(hasher.parts)) {
        throw new IntegrityError(`s3://${dest.bucket}/${dest.key}: stored SHA-256 checksum ${head.ChecksumSHA256} differs from the data sent`);
      }
      if (stored === undefined) opts.log?.(`warning: the server keeps no SHA-256 for ${dest.key}; checked its size only`);
      if (attempt > 1) opts.log?.(`uploaded ${dest.key} on attempt ${attempt}`);
      return { key: dest.key, size: hasher.bytes, sha256 };
    },
    {
      attempts: opts.attempts ?? 4,
      baseDelayMs: opts.retryBaseDelayMs ?? 500,
      signal: opts.signal,
      isRetryable: (err) => !isOutOfDisk(err) && (err instanceof IntegrityError || isTransientError(err)),
      onRetry: (err, attempt, delay) =>
        opts.log?.(`upload of ${dest.key} failed (attempt ${attempt}: ${errorMessage(err)}); retrying in ${delay} ms`),
    },
  );
}

/**
 * Upload the files of `dir` matching `globs` under `dest` (a key prefix) and return the verified objects. Failing,
 * it throws an OutputUploadError listing what did arrive.
 */
export async function uploadOutputs(dir: string, globs: string[], dest: S3Location, opts: UploadOptions = {}): Promise<OutputObject[]> {
  const files = await listOutputFiles(dir, globs);
  const total = files.reduce((sum, file) => sum + file.size, 0);
  let done = 0;
  const fileOpts = {
    ...opts,
    onProgress: undefined,
    onBytes: (n: number) => {
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
      opts.fileConcurrency ?? 8,
      (file) => uploadFile(path.join(dir, file.path), { bucket: dest.bucket, key: joinKey(dest.key, file.path) }, fileOpts),
      (object) => uploaded.push(object),
    );
  } catch (err) {
    if (err instanceof JobFailure) throw err;
    const sorted = uploaded.sort((a, b) => a.key.localeCompare(b.key));
    throw new OutputUploadError(
      `output upload to s3://${dest.bucket}/${dest.key} failed after ${sorted.length} of ${files.length} file(s): ${errorMessage(err)}`,
      sorted,
    );
  }
  opts.log?.(`uploaded ${files.length} file(s), ${total} bytes, to s3://${dest.bucket}/${dest.key}`);
  return uploaded.sort((a, b) => a.key.localeCompare(b.key));
}
