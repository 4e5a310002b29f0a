/**
 * Outputs: upload the files of the output directory that match the spec's globs (output-files.ts) through one pool of
 * requests shared by all files (upload.ts), so small files and a big file's parts interleave.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { setMaxListeners } from "node:events";
import path from "node:path";
import type { OutputObject } from "../job/records";
import { joinKey, type S3Location } from "../job/s3url";
import { errorMessage } from "../common/errors";
import { mapLimit } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import { JobFailure } from "./errors";
import { listOutputFiles, type SkippedLink } from "./output-files";
import { RequestPool, uploadFile, type FileUploadContext } from "./upload";

const MiB = 1024 * 1024;

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

/** An upload that failed part-way: `uploaded` lists the objects that did arrive and were verified. */
export class OutputUploadError extends JobFailure {
  constructor(
    message: string,
    readonly uploaded: OutputObject[],
  ) {
    super("output-upload-failed", message, "outputs");
  }
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
