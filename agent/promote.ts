/**
 * Results become visible under `<prefix>/<subject>/` only for a successful job. Every job uploads its outputs to its
 * own area (`_cloudcompute/<jobId>/outputs/`); a successful one then copies them server-side into the subject's
 * results, records the set in the subject's results pointer, and deletes what the previous run left there that this
 * run did not write. A failed job never touches the results; a re-run never leaves old and new files mixed.
 *
 * The pointer (`_cloudcompute/subjects/<subject>/results.json`) names the job whose outputs are current and lists
 * them: it is how the agent knows the previous run's objects without a ListBucket, which the role does not have.
 * S3 cannot replace several objects at once, so while a promotion copies, the pointer says so (`complete: false`,
 * listing the old and new keys): a promotion cut off halfway leaves results that say they are incomplete — the batch
 * never takes them for a success — and the next successful run removes every key either run wrote.
 */
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
import { errorMessage, JobFailure } from "./errors";
import { putJson } from "./report";
import { httpStatusOf, mapLimit, withRetries } from "./retry";


export interface PromoteOptions {
  client: S3Client;
  jobId: string;
  launchId?: string;
  /** Objects above this size are copied in parts (CopyObject takes at most 5 GiB). */
  multipartCopyAbove?: number;
  copyPartSize?: number;
  log?: (line: string) => void;
}

const GiB = 1024 * 1024 * 1024;

async function readPointer(client: S3Client, pointer: S3Location): Promise<ResultsPointer | undefined> {
  try {
    const res = await withRetries(() => client.send(new GetObjectCommand({ Bucket: pointer.bucket, Key: pointer.key })), { attempts: 4 });
    return parseResultsPointer(JSON.parse(await res.Body!.transformToString()));
  } catch (err) {
    // The role may GetObject the pointer but not list the bucket, so real S3 answers 403, not 404, while none exists.
    if ([403, 404].includes(httpStatusOf(err) ?? 0) || (err as { name?: string }).name === "NoSuchKey") return undefined;
    throw err;
  }
}

async function copyObject(source: S3Location, dest: S3Location, size: number, opts: PromoteOptions): Promise<void> {
  const { client } = opts;
  const copySource = encodeURIComponent(`${source.bucket}/${source.key}`).replace(/%2F/g, "/");
  if (size <= (opts.multipartCopyAbove ?? 5 * GiB)) {
    await withRetries(() => client.send(new CopyObjectCommand({ Bucket: dest.bucket, Key: dest.key, CopySource: copySource })), { attempts: 5 });
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
          client.send(
            new UploadPartCopyCommand({ Bucket: dest.bucket, Key: dest.key, UploadId: uploadId, PartNumber: index + 1, CopySource: copySource, CopySourceRange: `bytes=${start}-${end}` }),
          ),
        { attempts: 5 },
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
  const previous = await readPointer(opts.client, pointer).catch((err) => {
    throw new JobFailure("output-upload-failed", `the subject's results pointer ${pointer.key} could not be read: ${errorMessage(err)}`, "outputs");
  });
  const promoted = uploaded.map((object) => ({ ...object, key: joinKey(results.key, object.key.slice(staged.key.length)) }));
  const pointerOf = (complete: boolean, objects: OutputObject[]): ResultsPointer => ({
    apiVersion: "cloudcompute/v1",
    jobId: opts.jobId,
    launchId: opts.launchId,
    promotedAt: new Date().toISOString(),
    complete,
    objects,
  });
  // Before the first copy: the results are in flux, and every key of the old and the new set is on record.
  const promotedKeys = new Set(promoted.map((object) => object.key));
  const inFlux = [...promoted, ...(previous?.objects ?? []).filter((object) => !promotedKeys.has(object.key))];
  await putJson(opts.client, pointer, pointerOf(false, inFlux)).catch((err) => {
    throw new JobFailure("output-upload-failed", `the subject's results pointer ${pointer.key} could not be written: ${errorMessage(err)}; the results are untouched`, "outputs");
  });
  const replaced: string[] = [];
  try {
    await mapLimit(uploaded, 8, async (object, index) => {
      await copyObject({ bucket: staged.bucket, key: object.key }, { bucket: results.bucket, key: promoted[index].key }, object.size, opts);
      replaced.push(promoted[index].key);
    });
  } catch (err) {
    throw new JobFailure(
      "output-upload-failed",
      `promoting the outputs to ${results.key} failed after ${replaced.length} of ${uploaded.length} object(s) (${replaced.slice(0, 5).join(", ")}` +
        `${replaced.length > 5 ? ", ..." : ""}): ${errorMessage(err)}; the whole set is in ${staged.key}. The results pointer marks ` +
        `${results.key} incomplete; a successful re-run replaces it`,
      "outputs",
    );
  }
  // Leftovers go first: the pointer says "complete" only once the results hold exactly this run's set.
  const stale = inFlux.map((object) => object.key).filter((key) => key.startsWith(results.key) && !promotedKeys.has(key));
  await mapLimit(stale, 8, (key) => withRetries(() => opts.client.send(new DeleteObjectCommand({ Bucket: results.bucket, Key: key })), { attempts: 5 }));
  await putJson(opts.client, pointer, pointerOf(true, promoted));
  opts.log?.(`promoted ${promoted.length} object(s) to ${results.key}${stale.length ? `, removed ${stale.length} left by ${previous!.jobId}` : ""}`);
  return promoted;
}
