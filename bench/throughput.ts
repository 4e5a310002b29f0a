/**
 * Raw throughput of the S3 server itself, for context beside the ratios: one PutObject and one GetObject of the same
 * in-memory buffer (single stream), the buffer as 4 objects put in parallel, and the object read as 4 parallel ranged
 * GETs. Checksums are off so the
 * client does as little as possible; whatever remains is the ceiling any S3 client can reach against this server.
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { benchClient, mib, timed } from "./util";

export interface ServerThroughput {
  object_mib: number;
  put_mib_s: number;
  put_4_objects_mib_s: number;
  get_mib_s: number;
  get_4_ranges_mib_s: number;
}

async function drain(body: unknown): Promise<number> {
  let bytes = 0;
  for await (const chunk of body as Readable) bytes += (chunk as Buffer).length;
  return bytes;
}

export async function measureServerThroughput(env: Record<string, string>, bucket: string, sizeMiB = 256): Promise<ServerThroughput> {
  const client: S3Client = benchClient(env);
  const body = randomBytes(sizeMiB * 1024 * 1024);
  const key = "throughput/object.bin";
  try {
    const put = await timed(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body })));
    const quarter = body.length / 4;
    const parallelPut = await timed(() =>
      Promise.all(
        [0, 1, 2, 3].map((i) =>
          client.send(
            new PutObjectCommand({ Bucket: bucket, Key: `${key}.${i}`, Body: body.subarray(i * quarter, (i + 1) * quarter) }),
          ),
        ),
      ),
    );
    const get = await timed(async () => drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body));
    const ranged = await timed(() =>
      Promise.all(
        [0, 1, 2, 3].map(async (i) => {
          const range = `bytes=${i * quarter}-${(i + 1) * quarter - 1}`;
          return drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: range }))).Body);
        }),
      ),
    );
    if (get.value !== body.length || ranged.value.reduce((a, b) => a + b, 0) !== body.length) {
      throw new Error("the server returned a different number of bytes than were stored");
    }
    return {
      object_mib: sizeMiB,
      put_mib_s: round(mib(body.length) / put.seconds),
      put_4_objects_mib_s: round(mib(body.length) / parallelPut.seconds),
      get_mib_s: round(mib(body.length) / get.seconds),
      get_4_ranges_mib_s: round(mib(body.length) / ranged.seconds),
    };
  } finally {
    client.destroy();
  }
}

function round(value: number): number {
  return Math.round(value);
}
