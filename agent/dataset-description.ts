/**
 * With layout bids, the output prefix is a BIDS-derivatives dataset: its `dataset_description.json` is created by
 * the first successful job and never overwritten (a later job, maybe of another image, or a file the user wrote
 * keeps it). S3's conditional create (`If-None-Match: *`) decides, so two jobs finishing together cannot both write.
 */
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { DatasetDescription } from "../job/bids";
import { formatS3Url, type S3Location } from "../job/s3url";
import { errorMessage } from "../common/errors";
import { httpStatusOf, withRetries } from "../common/retry";

export type DescriptionOutcome = "created" | "kept" | "failed";

/** Create the description unless one exists. Never throws: the subject's results stand either way. */
export async function ensureDatasetDescription(client: S3Client, loc: S3Location, description: DatasetDescription, log: (line: string) => void): Promise<DescriptionOutcome> {
  const url = formatS3Url(loc);
  try {
    await withRetries(
      () =>
        client.send(
          new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: JSON.stringify(description, null, 2) + "\n", ContentType: "application/json", IfNoneMatch: "*" }),
        ),
      { attempts: 4 },
    );
    log(`wrote ${url}`);
    return "created";
  } catch (err) {
    // 412: one exists; 409: a concurrent conditional create of the same key won. Either way: keep it.
    if ([409, 412].includes(httpStatusOf(err) ?? 0)) {
      log(`${url} exists: kept as it is`);
      return "kept";
    }
    log(`warning: ${url} could not be written: ${errorMessage(err)}`);
    return "failed";
  }
}
