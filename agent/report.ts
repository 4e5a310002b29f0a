/**
 * What the agent tells the outside world while it works: the job log (a local file uploaded periodically and at the
 * end) and the status heartbeat (job/records AgentStatus), plus small JSON writes to the job's private area.
 */
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createWriteStream, promises as fsp, WriteStream } from "node:fs";
import { Writable } from "node:stream";
import { WORKDIR_NAMES } from "../job/layout";
import { startingStatus, type AgentStatus, type Phase, type RecordIdentity } from "../job/records";
import type { S3Location } from "../job/s3url";
import { errorMessage } from "../common/errors";
import { withRetries } from "../common/retry";

/**
 * The job's log file. A write that fails (a full disk: ENOSPC) must not end the agent through an unhandled stream
 * error: the job then still reports why it failed (out-of-disk, from the write that hit it) and writes its marker.
 * After a failed write the file is left alone; lines still go to stderr when echoing.
 */
export class JobLog {
  private readonly stream: WriteStream;
  /** The first write error, after which the file is not written any more. */
  writeError?: Error;
  constructor(
    readonly file: string,
    private readonly echo = false,
  ) {
    this.stream = createWriteStream(file, { flags: "a" });
    this.stream.on("error", (err) => {
      this.writeError ??= err;
    });
  }

  private write(data: string | Buffer, echo: boolean): void {
    if (!this.writeError && !this.stream.destroyed) this.stream.write(data);
    if (echo && this.echo) process.stderr.write(data);
  }

  line(message: string): void {
    this.write(`${new Date().toISOString()} ${message}\n`, true);
  }

  /**
   * A sink for a child's raw stdout/stderr; ending it leaves the log open. The job's own output goes to the log file
   * only, never echoed: on EC2 the agent's stderr reaches the serial console, which anyone in the account allowed
   * GetConsoleOutput can read, and the output of a neuroimaging tool may name subjects or values.
   */
  raw(): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, callback) => {
        this.write(chunk, false);
        callback();
      },
    });
  }

  /** Resolves once everything written so far is in the file (or the file has failed). */
  flush(): Promise<void> {
    if (this.writeError || this.stream.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.stream.write("", () => resolve()));
  }

  close(): Promise<void> {
    if (this.writeError || this.stream.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.stream.end(() => resolve()));
  }
}

/** What of a long log goes to S3: its head and its tail (the full log stays on the instance's disk). */
export const LOG_UPLOAD_HEAD_BYTES = 1024 * 1024;
export const LOG_UPLOAD_TAIL_BYTES = 4 * 1024 * 1024;

/** The log as uploaded: whole when short, else head + a line saying what was left out + tail; never read whole. */
export async function logForUpload(file: string, size: number): Promise<Buffer> {
  const handle = await fsp.open(file, "r");
  try {
    const read = async (position: number, length: number) => {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, position);
      return buffer.subarray(0, bytesRead);
    };
    if (size <= LOG_UPLOAD_HEAD_BYTES + LOG_UPLOAD_TAIL_BYTES) return await read(0, size);
    const elided = size - LOG_UPLOAD_HEAD_BYTES - LOG_UPLOAD_TAIL_BYTES;
    return Buffer.concat([
      await read(0, LOG_UPLOAD_HEAD_BYTES),
      Buffer.from(`\n… ${elided} bytes elided here (the whole log is in ${WORKDIR_NAMES.log} on the instance) …\n`),
      await read(size - LOG_UPLOAD_TAIL_BYTES, LOG_UPLOAD_TAIL_BYTES),
    ]);
  } finally {
    await handle.close();
  }
}

export async function putObject(client: S3Client, loc: S3Location, body: string | Buffer, contentType: string): Promise<void> {
  await withRetries(() => client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: body, ContentType: contentType })), {
    attempts: 6,
  });
}

export function putJson(client: S3Client, loc: S3Location, value: unknown): Promise<void> {
  return putObject(client, loc, JSON.stringify(value, null, 2) + "\n", "application/json");
}

export interface ReporterOptions {
  /** Status heartbeat period (default 5 s). */
  statusIntervalMs?: number;
  /** Log upload period (default 30 s). */
  logIntervalMs?: number;
}

/** Keeps the status object and the uploaded log fresh while the job runs. Write errors are logged, never fatal. */
export class Reporter {
  readonly status: AgentStatus;
  private timers: NodeJS.Timeout[] = [];
  private uploadedLogBytes = -1;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: S3Client,
    private readonly locations: { status: S3Location; log: S3Location },
    /** Which job and launch the status belongs to: the driver ignores a status of another launch. */
    identity: RecordIdentity,
    private readonly log: JobLog,
    private readonly opts: ReporterOptions = {},
  ) {
    this.status = startingStatus(identity, new Date().toISOString());
  }

  start(): void {
    const every = (ms: number, fn: () => Promise<void>) => {
      const timer = setInterval(() => void fn(), ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(this.opts.statusIntervalMs ?? 5000, () => this.writeStatus());
    every(this.opts.logIntervalMs ?? 30_000, () => this.uploadLog());
    void this.writeStatus();
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  beginPhase(phase: Phase, message?: string): void {
    this.status.phase = phase;
    if (message !== undefined) this.status.message = message;
    const progress = (this.status.phases[phase] ??= { bytesDone: 0 });
    progress.startedAt ??= new Date().toISOString();
    this.log.line(`phase ${phase}${message ? `: ${message}` : ""}`);
    void this.writeStatus();
  }

  endPhase(phase: Phase): void {
    const progress = (this.status.phases[phase] ??= { bytesDone: 0 });
    progress.endedAt = new Date().toISOString();
  }

  progress(phase: Phase, bytesDone: number, bytesTotal?: number): void {
    const progress = (this.status.phases[phase] ??= { bytesDone: 0 });
    progress.bytesDone = bytesDone;
    if (bytesTotal !== undefined) progress.bytesTotal = bytesTotal;
  }

  /** Writes are serialised so an older status never lands after a newer one. */
  writeStatus(): Promise<void> {
    this.writing = this.writing.then(async () => {
      this.status.updatedAt = new Date().toISOString();
      try {
        await putJson(this.client, this.locations.status, this.status);
      } catch (err) {
        this.log.line(`warning: status update failed: ${errorMessage(err)}`);
      }
    });
    return this.writing;
  }

  async uploadLog(): Promise<void> {
    await this.log.flush();
    try {
      const { size } = await fsp.stat(this.log.file);
      if (size === this.uploadedLogBytes) return; // unchanged since the last upload
      await putObject(this.client, this.locations.log, await logForUpload(this.log.file, size), "text/plain; charset=utf-8");
      this.uploadedLogBytes = size;
    } catch (err) {
      this.log.line(`warning: log upload failed: ${errorMessage(err)}`);
    }
  }
}
