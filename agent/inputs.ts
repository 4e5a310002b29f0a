/**
 * Inputs: read an object (S3 with the instance role, a presigned HTTPS URL, or a public bucket unsigned) with parallel
 * ranged GETs, hash it and extract it in the same pass — no temporary archive on disk — then select the file(s) the
 * container gets by glob.
 */
import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { Readable, type Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import picomatch from "picomatch";
import { parseS3Url } from "../job/s3url";
import { inputLayout, type ArchiveKind } from "../job/input-file";
import { redactUrl, redactUrlIn, type InputSpec } from "../job/spec";
import { errorMessage } from "../common/errors";
import { isOutOfDisk, JobFailure } from "./errors";
import { extractTar } from "./extract";
import { httpStatusOf, withRetries } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";

export interface FetchInputOptions {
  /** Client for `role` inputs (default: the agent's client for the bucket); `public` inputs always go unsigned. */
  client?: S3Client;
  /** Bytes per ranged GET (default 8 MiB). */
  partSize?: number;
  /** Ranged GETs in flight (default 8). */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal?: number) => void;
  log?: (line: string) => void;
}


export interface FetchedInput {
  name: string;
  /** The URL with any signature removed. */
  url: string;
  extract: ArchiveKind;
  /** Bytes downloaded (the object's size). */
  bytes: number;
  /** SHA-256 (hex) of the downloaded object. */
  sha256: string;
  etag?: string;
  /** Every regular file written, relative to the input's directory (POSIX separators, sorted). */
  files: string[];
  /** The files chosen by `select`; without `select`, the single file of a plain object or "." (the directory). */
  selected: string[];
}

interface ObjectInfo {
  size: number;
  etag?: string;
  /** A full-object SHA-256 checksum (base64) the server stores, if any. */
  checksumSha256?: string;
}

/** Ranged reads of one object. `open` fails with a JobFailure naming the reason (missing, expired, ...). */
interface RangeSource {
  open(signal?: AbortSignal): Promise<ObjectInfo>;
  /** The bytes, in `into` (its length is the range's) where the source can fill it in place. */
  readRange(start: number, endInclusive: number, etag: string | undefined, signal: AbortSignal | undefined, into: Buffer): Promise<Buffer>;
}

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// Sources

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

/** When a presigned URL stops working: `X-Amz-Date` + `X-Amz-Expires`, if the URL says. */
export function presignedExpiry(url: string): Date | undefined {
  try {
    const params = new URL(url).searchParams;
    const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(params.get("X-Amz-Date") ?? "");
    const expires = Number(params.get("X-Amz-Expires"));
    if (!date || !Number.isFinite(expires)) return undefined;
    const [, y, mo, d, h, mi, s] = date;
    return new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) + expires * 1000);
  } catch {
    return undefined;
  }
}

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function presignedSource(label: string, url: string, partSize: number): RangeSource & { first?: Buffer; whole?: Readable } {
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
  const source: RangeSource & { first?: Buffer; whole?: Readable } = {
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
        source.first = Buffer.from(await res.arrayBuffer());
        return { size: total ? Number(total) : source.first.length, etag };
      }
      // The server ignored the range: take the whole body as one stream.
      source.whole = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
      return { size: Number(res.headers.get("content-length") ?? NaN), etag };
    },
    async readRange(start, end, etag, signal) {
      const headers: Record<string, string> = { Range: `bytes=${start}-${end}` };
      if (etag) headers["If-Match"] = etag;
      const res = await fetch(url, { headers, signal });
      if (res.status !== 206) await failFor(res);
      return Buffer.from(await res.arrayBuffer());
    },
  };
  return source;
}

// ---------------------------------------------------------------------------------------------------------------
// Ordered parallel download

/**
 * Range buffers handed back once their bytes are written: a fresh buffer per range means gigabytes of short-lived
 * external memory, and V8 answers that with a full garbage collection every few dozen megabytes.
 */
class RangeBuffers {
  private readonly spare: Buffer[] = [];
  private readonly owned = new WeakSet<Buffer>();
  constructor(private readonly size: number) {}
  take(length: number): Buffer {
    if (length !== this.size) return Buffer.allocUnsafe(length);
    const buffer = this.spare.pop() ?? Buffer.allocUnsafeSlow(length);
    this.owned.add(buffer);
    return buffer;
  }
  /** Only for a buffer nothing reads any more. */
  release(buffer: Buffer): void {
    if (this.owned.has(buffer)) this.spare.push(buffer);
  }
}

/** The object's bytes in order, fetched as ranges with `concurrency` requests in flight. */
async function* orderedRanges(
  source: RangeSource,
  info: ObjectInfo,
  partSize: number,
  concurrency: number,
  outerSignal: AbortSignal | undefined,
  firstChunk: Buffer | undefined,
  buffers: RangeBuffers,
): AsyncGenerator<Buffer> {
  const local = new AbortController();
  const onAbort = () => local.abort(outerSignal?.reason);
  outerSignal?.addEventListener("abort", onAbort);
  const inflight: Promise<Buffer>[] = [];
  let next = firstChunk ? firstChunk.length : 0;
  const schedule = () => {
    while (inflight.length < concurrency && next < info.size) {
      const start = next;
      const end = Math.min(info.size, start + partSize) - 1;
      next = end + 1;
      const expected = end - start + 1;
      const into = buffers.take(expected);
      const request = withRetries(
        async () => {
          const chunk = await source.readRange(start, end, info.etag, local.signal, into);
          if (chunk.length !== expected) {
            throw Object.assign(new Error(`short read: ${chunk.length} of ${expected} bytes at ${start}`), { code: "ECONNRESET" });
          }
          return chunk;
        },
        { signal: local.signal },
      );
      request.catch(() => undefined); // handled when awaited in order
      inflight.push(request);
    }
  };
  try {
    schedule();
    if (firstChunk && firstChunk.length > 0) yield firstChunk;
    while (inflight.length > 0) {
      const chunk = await inflight.shift()!;
      schedule();
      yield chunk;
    }
  } finally {
    local.abort();
    outerSignal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Write `chunks` into `sink` and end it, handing each chunk to `release` once the sink is done with it. A failed
 * source destroys the sink with its error; a failed sink stops the source.
 */
async function writeAll(chunks: AsyncIterable<Buffer>, sink: Writable, release: (chunk: Buffer) => void): Promise<void> {
  let sinkError: Error | undefined;
  let wake: (() => void) | undefined;
  const onError = (err: Error) => {
    sinkError ??= err;
    wake?.();
  };
  const onReady = () => wake?.();
  const stopped = () => sinkError !== undefined || sink.destroyed;
  sink.on("error", onError);
  sink.on("drain", onReady);
  sink.on("close", onReady);
  try {
    for await (const chunk of chunks) {
      if (stopped()) break;
      const more = sink.write(chunk, (err) => {
        if (!err) release(chunk);
      });
      if (!more) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (stopped() || !sink.writableNeedDrain) resolve();
        });
        wake = undefined;
      }
    }
    if (sinkError) throw sinkError;
    if (sink.destroyed) throw Object.assign(new Error("the output closed before the input ended"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
    sink.end();
  } catch (err) {
    sink.destroy(err as Error);
    throw err;
  } finally {
    sink.off("drain", onReady);
    sink.off("close", onReady);
    // The error listener stays: a later error (after end) must not crash the process as unhandled.
  }
}

// ---------------------------------------------------------------------------------------------------------------

export function selectFiles(files: string[], pattern: string | undefined, allowMultiple: boolean, label: string): string[] {
  if (!pattern) return files;
  const isMatch = picomatch(pattern, { dot: true });
  const matches = files.filter((file) => isMatch(file)).sort();
  const sample = (list: string[]) => list.slice(0, 5).join(", ") + (list.length > 5 ? `, ... (${list.length} in all)` : "");
  if (matches.length === 0) {
    throw new JobFailure(
      "no-matching-file",
      `${label}: no file matches "${pattern}" among ${files.length} file(s)${files.length ? ` (${sample(files)})` : ""}`,
    );
  }
  if (matches.length > 1 && !allowMultiple) {
    throw new JobFailure(
      "multiple-matching-files",
      `${label}: ${matches.length} files match "${pattern}" (${sample(matches)}); set allowMultiple or narrow the glob`,
    );
  }
  return matches;
}

/**
 * Download `input` into `destDir` (created if needed), extracting archives on the fly, verify it and select files.
 * Fails with a JobFailure: missing-input, presigned-url-expired, input-integrity, corrupt-archive, no-matching-file,
 * multiple-matching-files or out-of-disk.
 */
export async function fetchInput(input: InputSpec, destDir: string, opts: FetchInputOptions = {}): Promise<FetchedInput> {
  try {
    return await fetchInputUnredacted(input, destDir, opts);
  } catch (err) {
    // Errors from below (fetch's "Failed to parse URL from ...", the SDK) may quote a presigned URL whole.
    if (input.access === "presigned" && err instanceof JobFailure) {
      throw new JobFailure(err.reason, redactUrlIn(err.message, input.url), err.phase);
    }
    throw err;
  }
}

async function fetchInputUnredacted(input: InputSpec, destDir: string, opts: FetchInputOptions): Promise<FetchedInput> {
  const label = `input "${input.name}"`;
  const partSize = opts.partSize ?? 8 * MiB;
  const concurrency = opts.concurrency ?? 8;
  // The spec refuses such inputs too; a spec written by hand must not get past here either.
  const layout = inputLayout(input.url, input.extract);
  if ("error" in layout) throw new JobFailure(layout.field === "extract" ? "internal-error" : "missing-input", `${label}: ${layout.error}`);
  const kind = layout.kind;
  await fsp.mkdir(destDir, { recursive: true });

  let source: RangeSource & { first?: Buffer; whole?: Readable };
  if (input.access === "presigned") source = presignedSource(label, input.url, partSize);
  else {
    const { bucket } = parseS3Url(input.url);
    const client = input.access === "public" ? s3ClientFor(bucket, { anonymous: true }) : (opts.client ?? s3ClientFor(bucket));
    source = s3Source(label, input.url, client);
  }
  const info = await source.open(opts.signal);
  const shown = redactUrl(input.url);
  opts.log?.(`${label}: ${shown} is ${Number.isFinite(info.size) ? `${info.size} bytes` : "of unknown size"}, ${kind === "none" ? "no extraction" : `extracting ${kind} while downloading`}`);

  const hash = createHash("sha256");
  let bytes = 0;
  const buffers = new RangeBuffers(partSize);
  const chunks: AsyncIterable<Buffer> =
    source.whole ?? orderedRanges(source, info, partSize, concurrency, opts.signal, source.first, buffers);
  async function* counted() {
    for await (const chunk of chunks) {
      hash.update(chunk);
      bytes += chunk.length;
      opts.onProgress?.(bytes, Number.isFinite(info.size) ? info.size : undefined);
      yield chunk;
    }
  }
  const release = (chunk: Buffer) => buffers.release(chunk);

  let files: string[];
  try {
    if (layout.kind === "none") {
      const name = layout.fileName;
      const file = createWriteStream(path.join(destDir, name), { flags: "wx", highWaterMark: MiB });
      const closed = finished(file);
      closed.catch(() => undefined); // awaited below, after the writes
      await writeAll(counted(), file, release);
      await closed;
      files = [name];
    } else if (kind === "tar") {
      // tar-stream hands out slices of its input as file data: those buffers are not reused.
      files = await extractTar(Readable.from(counted(), { objectMode: false, highWaterMark: 1 }), destDir, label);
    } else {
      // zlib runs on the thread pool, so gunzip overlaps with hashing and tar parsing on the main thread.
      const gunzip = createGunzip({ chunkSize: MiB });
      const fed = writeAll(counted(), gunzip, release);
      fed.catch(() => undefined); // a failed download also fails the extraction, which reports it
      files = await extractTar(gunzip, destDir, label);
      await fed;
    }
  } catch (err) {
    if (err instanceof JobFailure) throw err;
    if (isOutOfDisk(err)) throw new JobFailure("out-of-disk", `${label}: out of disk while writing to ${destDir}: ${errorMessage(err)}`);
    if ((err as { name?: string }).name === "AbortError" || opts.signal?.aborted) throw opts.signal?.reason ?? err;
    if (Number.isFinite(info.size) && bytes < info.size) {
      throw new JobFailure("missing-input", `${label}: download of ${shown} broke off after ${bytes} of ${info.size} bytes: ${errorMessage(err)}`);
    }
    throw new JobFailure("corrupt-archive", `${label}: ${shown} is not a readable ${kind} archive: ${errorMessage(err)}`);
  }

  const sha256 = hash.digest("hex");
  if (Number.isFinite(info.size) && bytes !== info.size) {
    throw new JobFailure("input-integrity", `${label}: read ${bytes} bytes of ${shown} but the server announced ${info.size}`);
  }
  if (input.sha256 && input.sha256 !== sha256) {
    throw new JobFailure("input-integrity", `${label}: sha256 of ${shown} is ${sha256}, the spec expects ${input.sha256}`);
  }
  if (info.checksumSha256 && Buffer.from(sha256, "hex").toString("base64") !== info.checksumSha256) {
    throw new JobFailure("input-integrity", `${label}: sha256 of ${shown} does not match the checksum S3 stores (${info.checksumSha256})`);
  }
  const selected = input.select ? selectFiles(files, input.select, input.allowMultiple, label) : kind === "none" ? files : ["."];
  opts.log?.(`${label}: ${bytes} bytes, sha256 ${sha256}, ${files.length} file(s); selected ${selected.join(", ")}`);
  return { name: input.name, url: shown, extract: kind, bytes, sha256, etag: info.etag, files, selected };
}
