/**
 * The ordered parallel download: an object's bytes in order, fetched as byte ranges with several requests in flight,
 * and written into a stream with backpressure, each range buffer reused once the stream is done with it.
 */
import type { Writable } from "node:stream";
import { withRetries } from "../common/retry";
import type { OpenedObject, RangeSource } from "./input-sources";

/**
 * Range buffers handed back once their bytes are written: a fresh buffer per range means gigabytes of short-lived
 * external memory, and V8 answers that with a full garbage collection every few dozen megabytes.
 */
export class RangeBuffers {
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

/**
 * The object's bytes in order, fetched as ranges with `concurrency` requests in flight; `info.first`, bytes the open
 * already read, come first.
 */
export async function* orderedRanges(
  source: RangeSource,
  info: OpenedObject,
  partSize: number,
  concurrency: number,
  outerSignal: AbortSignal | undefined,
  buffers: RangeBuffers,
): AsyncGenerator<Buffer> {
  const firstChunk = info.first;
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
export async function writeAll(chunks: AsyncIterable<Buffer>, sink: Writable, release: (chunk: Buffer) => void): Promise<void> {
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
