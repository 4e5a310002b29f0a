/**
 * Results become visible under `<prefix>/<subject>/` only for a successful job. Every job uploads its outputs to its
 * own area (`_cloudcompute/<jobId>/launch/<launchId>/outputs/`); a successful one then copies them server-side into the subject's
 * results, records the set in the subject's results pointer, and deletes what the previous run left there that this
 * run did not write. A failed job never touches the results; a re-run never leaves old and new files mixed.
 *
 * The pointer (`_cloudcompute/subjects/<subject>/results.json`) names the job whose outputs are current and lists
 * them: it is how the agent knows the previous run's objects without a ListBucket, which the role does not have.
 * S3 cannot replace several objects at once, so while a promotion copies, the pointer says so (`complete: false`,
 * listing the old and new keys): a promotion cut off halfway leaves results that say they are incomplete — the batch
 * never takes them for a success — and the next successful run removes every key either run wrote.
 *
 * The in-flux pointer is also the subject's promotion lease (Terraform's S3 backend locks the same way): it is
 * written only if the pointer is still the one this job read (If-Match, or If-None-Match when there was none), and
 * finished only if it is still this job's. Two jobs of one subject (two batches, two lab members on one prefix) thus
 * promote one after the other, never interleaved. The holder renews the lease every tenth of PROMOTION_LEASE_MS while
 * it copies and once more before it deletes anything, and stops at once if a renewal finds the lease gone; a lease
 * whose object S3 last wrote more than PROMOTION_LEASE_MS ago is taken over (its job died). Any error releases it.
 */
import { randomUUID } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  UploadPartCopyCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { joinKey, type S3Location } from "../job/s3url";
import { parseResultsPointer, type OutputObject, type ResultsPointer } from "../job/records";
import { errorMessage } from "../common/errors";
import { JobFailure } from "./errors";
import { httpStatusOf, mapLimit, withRetries } from "../common/retry";
import { putJsonIfUnchanged } from "../common/conditional-write";


export interface PromoteOptions {
  client: S3Client;
  jobId: string;
  launchId?: string;
  /** The job's subject, recorded in the pointer; a pointer naming another subject is never taken over. */
  subject?: string;
  /** Objects above this size are copied in parts (CopyObject takes at most 5 GiB). */
  multipartCopyAbove?: number;
  copyPartSize?: number;
  log?: (line: string) => void;
  /** How long to wait for another job's promotion of the subject to finish (default 20 min). */
  leaseWaitMs?: number;
  leasePollMs?: number;
  /** Overrides PROMOTION_LEASE_MS (tests). */
  leaseMs?: number;
}

const GiB = 1024 * 1024 * 1024;
/** A lease not renewed for this long (by S3's clock: LastModified) is taken over: its job died. */
export const PROMOTION_LEASE_MS = 10 * 60_000;

interface PointerVersion {
  pointer?: ResultsPointer;
  /** The stored object's ETag; absent when there is no pointer. */
  etag?: string;
  /** When S3 last wrote it (the server's clock, not the writer's). */
  lastModified?: Date;
}

async function readPointer(client: S3Client, pointer: S3Location): Promise<PointerVersion> {
  try {
    const res = await withRetries(() => client.send(new GetObjectCommand({ Bucket: pointer.bucket, Key: pointer.key })), { attempts: 4 });
    return { pointer: parseResultsPointer(JSON.parse(await res.Body!.transformToString())), etag: res.ETag, lastModified: res.LastModified };
  } catch (err) {
    // The role may GetObject the pointer but not list the bucket, so real S3 answers 403, not 404, while none exists.
    // Taking that for "none" is safe: the lease below is then created with If-None-Match, which no existing pointer passes.
    if ([403, 404].includes(httpStatusOf(err) ?? 0) || (err as { name?: string }).name === "NoSuchKey") return {};
    throw err;
  }
}

/** Write the pointer only if it is still `expected` (undefined: only if there is none). Returns the new ETag, or "conflict". */
function writePointer(client: S3Client, loc: S3Location, value: ResultsPointer, expected: string | undefined): Promise<string | "conflict"> {
  return putJsonIfUnchanged(client, loc, value, expected, 6);
}

async function copyObject(source: S3Location, dest: S3Location, size: number, opts: PromoteOptions & { signal?: AbortSignal }): Promise<void> {
  const { client, signal } = opts;
  const send = client.send.bind(client) as (command: unknown, options?: { abortSignal?: AbortSignal }) => Promise<{ CopyPartResult?: { ETag?: string }; UploadId?: string }>;
  const copySource = encodeURIComponent(`${source.bucket}/${source.key}`).replace(/%2F/g, "/");
  if (size <= (opts.multipartCopyAbove ?? 5 * GiB)) {
    await withRetries(() => send(new CopyObjectCommand({ Bucket: dest.bucket, Key: dest.key, CopySource: copySource }), { abortSignal: signal }), { attempts: 5, signal });
    return;
  }
  const partSize = opts.copyPartSize ?? GiB;
  const created = await client.send(new CreateMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key }));
  const uploadId = created.UploadId!;
  try {
    const ranges: Array<[number, number]> = [];
    for (let start = 0; start < size; start += partSize) ranges.push([start, Math.min(size, start + partSize) - 1]);
    const parts = await mapLimit(ranges, 4, async ([start, end], index) => {
      const res = await withRetries(
        () =>
          send(
            new UploadPartCopyCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: uploadId, PartNumber: index + 1, CopySource: copySource, CopySourceRange: `bytes=${start}-${end}` }),
            { abortSignal: signal },
          ),
        { attempts: 5, signal },
      );
      return { PartNumber: index + 1, ETag: res.CopyPartResult?.ETag };
    });
    await client.send(new CompleteMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
  } catch (err) {
    await client.send(new AbortMultipartUploadCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: uploadId })).catch(() => undefined);
    throw err;
  }
}

/**
 * Copy `uploaded` (objects under `staged`) to the same relative keys under `results`, then point the subject's
 * results at them and delete the previous run's leftovers. Returns the objects as they now are under `results`.
 */
export async function promoteResults(uploaded: OutputObject[], staged: S3Location, results: S3Location, pointer: S3Location, opts: PromoteOptions): Promise<OutputObject[]> {
  const { client } = opts;
  const fail = (why: string) => new JobFailure("output-upload-failed", why, "outputs");
  const promoted = uploaded.map((object) => ({ ...object, key: joinKey(results.key, object.key.slice(staged.key.length)) }));
  const promotedKeys = new Set(promoted.map((object) => object.key));
  const leaseId = randomUUID();
  const pointerOf = (complete: boolean, objects: OutputObject[], released?: boolean): ResultsPointer => ({
    apiVersion: "cloudcompute/v1",
    jobId: opts.jobId,
    launchId: opts.launchId,
    ...(opts.subject ? { subject: opts.subject } : {}),
    leaseId,
    promotedAt: new Date().toISOString(),
    complete,
    ...(released ? { released } : {}),
    objects,
  });

  // Take the lease: the in-flux pointer, written over exactly the pointer read (the old and the new keys on record).
  const leaseMs = opts.leaseMs ?? PROMOTION_LEASE_MS;
  // Longer than a dead job's lease takes to go stale: a waiter then always gets its turn.
  const waitUntil = Date.now() + (opts.leaseWaitMs ?? 2 * leaseMs);
  let previous: ResultsPointer | undefined;
  let inFlux: OutputObject[] = [];
  let held: string | undefined;
  let conflicts = 0;
  while (held === undefined) {
    const read = await readPointer(client, pointer).catch((err) => {
      throw fail(`the subject's results pointer ${pointer.key} could not be read: ${errorMessage(err)}`);
    });
    const other = read.pointer;
    if (other?.subject && opts.subject && other.subject !== opts.subject) {
      throw fail(`${results.key} holds the results of subject ${other.subject} (job ${other.jobId}), not of ${opts.subject}: the two share one results folder; the results are untouched`);
    }
    if (other?.leaseId === leaseId) {
      held = read.etag; // our own write arrived, its answer did not
      break;
    }
    const age = Date.now() - (read.lastModified?.getTime() ?? Date.parse(other?.promotedAt ?? "")); // S3's clock where known
    if (other && other.complete === false && !other.released && age < leaseMs) {
      if (Date.now() > waitUntil) throw fail(`job ${other.jobId} is promoting results of this subject into ${results.key} (since ${other.promotedAt}); the results are untouched`);
      opts.log?.(`job ${other.jobId} is promoting results of this subject (since ${other.promotedAt}); waiting for it`);
      await new Promise((resolve) => setTimeout(resolve, opts.leasePollMs ?? 5000));
      continue;
    }
    previous = other;
    inFlux = [...promoted, ...(previous?.objects ?? []).filter((object) => !promotedKeys.has(object.key))];
    const written = await writePointer(client, pointer, pointerOf(false, inFlux), read.etag).catch((err) => {
      throw fail(`the subject's results pointer ${pointer.key} could not be written: ${errorMessage(err)}; the results are untouched`);
    });
    if (written !== "conflict") {
      held = written;
      break;
    }
    // Another job wrote the pointer between our read and our write: look again.
    if (++conflicts > 20) throw fail(`the subject's results pointer ${pointer.key} keeps changing (or cannot be read); the results are untouched`);
  }

  // Hold the lease while copying: renew it on a timer, stop at once if it was taken (our renewal then conflicts).
  const lease = new AbortController();
  let renewing: Promise<void> = Promise.resolve();
  const renew = async (): Promise<void> => {
    const written = await writePointer(client, pointer, pointerOf(false, inFlux), held || undefined);
    if (written === "conflict") {
      lease.abort(fail(`another job took over the subject's results (${results.key}) while this one promoted`));
      throw lease.signal.reason;
    }
    held = written;
  };
  const heartbeat = setInterval(() => {
    renewing = renewing.then(renew).catch(() => undefined);
  }, Math.max(1000, Math.floor(leaseMs / 10)));
  let finished = false;
  const replaced: string[] = [];
  try {
    try {
      await mapLimit(uploaded, 8, async (object, index) => {
        lease.signal.throwIfAborted();
        await copyObject({ bucket: staged.bucket, key: object.key }, { bucket: results.bucket, key: promoted[index].key }, object.size, { ...opts, signal: lease.signal });
        replaced.push(promoted[index].key);
      });
    } catch (err) {
      if (lease.signal.aborted) throw lease.signal.reason;
      throw fail(
        `promoting the outputs to ${results.key} failed after ${replaced.length} of ${uploaded.length} object(s) (${replaced.slice(0, 5).join(", ")}` +
          `${replaced.length > 5 ? ", ..." : ""}): ${errorMessage(err)}; the whole set is in ${staged.key}. The results pointer marks ` +
          `${results.key} incomplete; a successful re-run replaces it`,
      );
    }
    clearInterval(heartbeat);
    await renewing;
    // Still ours? Renew once more before deleting anything: a job that took over must never lose keys to us.
    await renew();
    // Leftovers go first: the pointer says "complete" only once the results hold exactly this run's set.
    const stale = inFlux.map((object) => object.key).filter((key) => key.startsWith(results.key) && !promotedKeys.has(key));
    await mapLimit(stale, 8, (key) => withRetries(() => client.send(new DeleteObjectCommand({ Bucket: results.bucket, Key: key })), { attempts: 5 }));
    // Finish only what is still ours.
    const done = await writePointer(client, pointer, pointerOf(true, promoted), held || undefined);
    const ours = done !== "conflict" || (await readPointer(client, pointer).then((r) => r.pointer?.leaseId === leaseId && r.pointer.complete === true, () => false));
    if (!ours) throw fail(`another job took over the subject's results (${results.key}) while this one promoted`);
    finished = true;
    opts.log?.(`promoted ${promoted.length} object(s) to ${results.key}${stale.length ? `, removed ${stale.length} left by ${previous?.jobId ?? "an earlier run"}` : ""}`);
  } finally {
    clearInterval(heartbeat);
    // Any failure gives the lease up (the results stay marked incomplete, every key on record): the next job need
    // not wait for it to go stale. A lease taken by another job is not ours to release: the write then conflicts.
    if (!finished) await writePointer(client, pointer, pointerOf(false, inFlux, true), held || undefined).catch(() => undefined);
  }
  return promoted;
}
