/**
 * The agent benchmarks' S3 data: staging an archive, a client that serves a local file as the object, and checking
 * then removing what an upload left.
 */
import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import type { BenchContext } from "./context";
import { benchClient, MiB } from "./util";

export async function uploadFixture(ctx: BenchContext, file: string, key: string): Promise<void> {
  const client = benchClient(ctx.server.env);
  try {
    await new Upload({
      client,
      params: { Bucket: ctx.bucket, Key: key, Body: createReadStream(file) },
      partSize: 16 * MiB,
      queueSize: 4,
    }).done();
  } finally {
    client.destroy();
  }
}

/**
 * One local file behind the two calls fetchInput makes to S3 (HeadObject, ranged GetObject), so the agent's own range
 * reader, hashing, gunzip and tar extraction run with the local disk as the source: "extract alone".
 */
export function localFileClient(file: string, size: number): S3Client & { closeFile(): Promise<void> } {
  let handle: Promise<FileHandle> | undefined;
  const send = async (command: unknown) => {
    if (command instanceof HeadObjectCommand) return { ContentLength: size, ETag: '"local-file"' };
    if (command instanceof GetObjectCommand) {
      const range = /^bytes=(\d+)-(\d+)$/.exec(command.input.Range ?? "");
      if (!range) throw new Error(`local file client: unsupported range ${command.input.Range}`);
      const start = Number(range[1]);
      const length = Math.min(size - 1, Number(range[2])) - start + 1;
      const buffer = Buffer.allocUnsafe(length);
      const fh = await (handle ??= open(file, "r"));
      for (let done = 0; done < length; ) {
        const { bytesRead } = await fh.read(buffer, done, length - done, start + done);
        if (bytesRead === 0) throw new Error(`local file client: ${file} ended at ${start + done}`);
        done += bytesRead;
      }
      return { Body: { transformToByteArray: async () => buffer } };
    }
    throw new Error(`local file client: unexpected ${(command as object).constructor.name}`);
  };
  const closeFile = async () => (await handle)?.close();
  return { send, closeFile } as unknown as S3Client & { closeFile(): Promise<void> };
}

async function listPrefix(client: S3Client, bucket: string, prefix: string): Promise<Array<{ Key: string; Size: number }>> {
  const objects: Array<{ Key: string; Size: number }> = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) objects.push({ Key: o.Key!, Size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return objects;
}

/** Check what arrived under `prefix` (count and bytes), then delete it so rounds do not fill the disk. */
export async function checkAndRemove(ctx: BenchContext, prefix: string, files: number, bytes: number): Promise<void> {
  const client = benchClient(ctx.server.env);
  try {
    const objects = await listPrefix(client, ctx.bucket, prefix);
    const total = objects.reduce((sum, o) => sum + o.Size, 0);
    if (objects.length !== files || total !== bytes) {
      throw new Error(`s3://${ctx.bucket}/${prefix} holds ${objects.length} objects / ${total} bytes, expected ${files} / ${bytes}`);
    }
    for (let i = 0; i < objects.length; i += 1000) {
      const batch = objects.slice(i, i + 1000).map((o) => ({ Key: o.Key }));
      await client.send(new DeleteObjectsCommand({ Bucket: ctx.bucket, Delete: { Objects: batch, Quiet: true } }));
    }
  } finally {
    client.destroy();
  }
}
