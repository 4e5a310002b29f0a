/**
 * Inputs: fetch one input into its directory. The object is read from its source (input-sources.ts) with parallel
 * ranged GETs (download.ts), hashed and extracted (extract.ts) in the same pass — no temporary archive on disk, except
 * for zips, whose directory is at the end (extract-zip.ts) — then verified, and the file(s) the container gets are
 * selected by glob and hashed (select.ts).
 */
import { createHash } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import type { S3Client } from "@aws-sdk/client-s3";
import { inputLayout, type ArchiveKind, type InputLayout } from "../job/input-file";
import { redactUrl, redactUrlIn, type InputSpec } from "../job/spec";
import { errorMessage } from "../common/errors";
import { orderedRanges, RangeBuffers, writeAll } from "./download";
import { isOutOfDisk, JobFailure } from "./errors";
import { extractTar } from "./extract";
import { inputSource, type ObjectInfo } from "./input-sources";
import { digestFiles, selectFiles, type FileDigest } from "./select";
import { extractZip } from "./extract-zip";

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
  /** What the container sees: only the selected files (`select` given, `mount` not "all") or the whole input. */
  mount: "selected" | "all";
  /** The files the command gets (every file when the whole directory is selected), each with its own hash. */
  digests: FileDigest[];
}

const MiB = 1024 * 1024;

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

  const source = inputSource(input, label, partSize, opts.client);
  const info = await source.open(opts.signal);
  const shown = redactUrl(input.url);
  opts.log?.(`${label}: ${shown} is ${Number.isFinite(info.size) ? `${info.size} bytes` : "of unknown size"}, ${kind === "none" ? "no extraction" : kind === "zip" ? "downloading the zip, then extracting it" : `extracting ${kind} while downloading`}`);

  const hash = createHash("sha256");
  let bytes = 0;
  const buffers = new RangeBuffers(partSize);
  const chunks: AsyncIterable<Buffer> = info.whole ?? orderedRanges(source, info, partSize, concurrency, opts.signal, buffers);
  async function* counted() {
    for await (const chunk of chunks) {
      hash.update(chunk);
      bytes += chunk.length;
      opts.onProgress?.(bytes, Number.isFinite(info.size) ? info.size : undefined);
      yield chunk;
    }
  }

  const failed = (err: unknown): never => {
    if (err instanceof JobFailure) throw err;
    if (isOutOfDisk(err)) throw new JobFailure("out-of-disk", `${label}: out of disk while writing to ${destDir}: ${errorMessage(err)}`);
    if ((err as { name?: string }).name === "AbortError" || opts.signal?.aborted) throw opts.signal?.reason ?? err;
    if (Number.isFinite(info.size) && bytes < info.size) {
      throw new JobFailure("missing-input", `${label}: download of ${shown} broke off after ${bytes} of ${info.size} bytes: ${errorMessage(err)}`);
    }
    throw new JobFailure("corrupt-archive", `${label}: ${shown} is not a readable ${kind} archive: ${errorMessage(err)}`);
  };

  let files: string[];
  let sha256: string;
  if (layout.kind === "zip") {
    // The zip's directory is at its end: the archive goes to disk first (hashed on the way), is checked, then extracted.
    const archive = zipDownloadPath(destDir);
    try {
      await writeFile(counted(), archive, (chunk) => buffers.release(chunk)).catch(failed);
      sha256 = hash.digest("hex");
      checkIntegrity(input, info, bytes, sha256, label, shown);
      files = await extractZip(archive, destDir, label).catch(failed);
    } finally {
      await fsp.rm(archive, { force: true });
    }
  } else {
    files = await writeInput(counted(), layout, destDir, label, (chunk) => buffers.release(chunk)).catch(failed);
    sha256 = hash.digest("hex");
    checkIntegrity(input, info, bytes, sha256, label, shown);
  }

  const selected = input.select ? selectFiles(files, input.select, input.allowMultiple, label) : kind === "none" ? files : ["."];
  const mount = input.select && input.mount !== "all" ? "selected" : "all";
  // What the command gets, each with its own hash: a plain object is its own one file.
  const digests =
    layout.kind === "none" ? [{ path: layout.fileName, sha256, bytes }] : await digestFiles(destDir, selected[0] === "." ? files : selected);
  opts.log?.(`${label}: ${bytes} bytes, sha256 ${sha256}, ${files.length} file(s); selected ${selected.join(", ")}; mounted: ${mount === "all" ? "the whole input" : "the selected file(s) only"}`);
  return { name: input.name, url: shown, extract: kind, bytes, sha256, etag: info.etag, files, selected, mount, digests };
}

/** Where a zip input's archive is downloaded before extraction: beside the input's directory, never inside it. */
export function zipDownloadPath(destDir: string): string {
  return path.join(path.dirname(destDir), `.${path.basename(destDir)}.download.zip`);
}

/** Write a byte stream to a new file (never over an existing one). */
async function writeFile(chunks: AsyncIterable<Buffer>, filePath: string, release: (chunk: Buffer) => void): Promise<void> {
  const file = createWriteStream(filePath, { flags: "wx", highWaterMark: MiB });
  const closed = finished(file);
  closed.catch(() => undefined); // awaited below, after the writes
  await writeAll(chunks, file, release);
  await closed;
}

/** Write the object's bytes into `destDir`: the one file of a plain input, or an archive's files (sorted). */
async function writeInput(chunks: AsyncIterable<Buffer>, layout: Exclude<InputLayout, { kind: "zip" }>, destDir: string, label: string, release: (chunk: Buffer) => void): Promise<string[]> {
  if (layout.kind === "none") {
    await writeFile(chunks, path.join(destDir, layout.fileName), release);
    return [layout.fileName];
  }
  if (layout.kind === "tar") {
    // tar-stream hands out slices of its input as file data: those buffers are not reused.
    return await extractTar(Readable.from(chunks, { objectMode: false, highWaterMark: 1 }), destDir, label);
  }
  // zlib runs on the thread pool, so gunzip overlaps with hashing and tar parsing on the main thread.
  const gunzip = createGunzip({ chunkSize: MiB });
  const fed = writeAll(chunks, gunzip, release);
  fed.catch(() => undefined); // a failed download also fails the extraction, which reports it
  const files = await extractTar(gunzip, destDir, label);
  await fed;
  return files;
}

/** The bytes read are the object announced, and match the spec's and the server's SHA-256 where they give one. */
function checkIntegrity(input: InputSpec, info: ObjectInfo, bytes: number, sha256: string, label: string, shown: string): void {
  if (Number.isFinite(info.size) && bytes !== info.size) {
    throw new JobFailure("input-integrity", `${label}: read ${bytes} bytes of ${shown} but the server announced ${info.size}`);
  }
  if (input.sha256 && input.sha256 !== sha256) {
    throw new JobFailure("input-integrity", `${label}: sha256 of ${shown} is ${sha256}, the spec expects ${input.sha256}`);
  }
  if (info.checksumSha256 && Buffer.from(sha256, "hex").toString("base64") !== info.checksumSha256) {
    throw new JobFailure("input-integrity", `${label}: sha256 of ${shown} does not match the checksum S3 stores (${info.checksumSha256})`);
  }
}
