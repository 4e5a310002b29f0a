/**
 * A stand-in for the compute of many jobs, for `npm run bench -- scale`: one process, outside the driver's process
 * tree, that "runs" every job handed to it. Per job it writes the agent's status object (the job's launchId, so the
 * driver's wait accepts it) at once and as a heartbeat every `heartbeatSeconds`, then after `runSeconds` the success
 * marker, to the job's place in S3 (moto). No container, no agent: the driver's memory and waits are what is measured.
 *
 * `npx tsx sandbox/stand-in-compute.ts` with STAND_IN_RUN_SECONDS, STAND_IN_HEARTBEAT_SECONDS and the S3 endpoint in
 * the environment; it prints `{"port":N}` on stdout, takes jobs as `POST /jobs` (JSON: bucket, statusKey, markerKey,
 * jobId, launchId, subject) and reports its counts at `GET /stats`.
 */
import * as http from "node:http";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startingStatus, successMarker } from "../job/records";

export interface StandInJob {
  bucket: string;
  statusKey: string;
  markerKey: string;
  resultsPrefix: string;
  jobId: string;
  launchId: string;
  subject: string;
}

export interface StandInStats {
  jobs: number;
  statusWrites: number;
  markers: number;
  writeErrors: number;
  lastError?: string;
  /** Writes waiting for a free connection: a backlog here means S3 (moto) is not keeping up. */
  queued: number;
  maxQueued: number;
}

/** S3 writes in flight at once: moto answers a few hundred small PUTs a second. */
const WRITES_AT_ONCE = 16;

function main(): void {
  const runSeconds = Number(process.env.STAND_IN_RUN_SECONDS ?? 120);
  const heartbeatSeconds = Number(process.env.STAND_IN_HEARTBEAT_SECONDS ?? 30);
  const s3 = new S3Client({ forcePathStyle: true, region: process.env.AWS_REGION ?? "us-east-1", endpoint: process.env.AWS_ENDPOINT_URL, requestChecksumCalculation: "WHEN_REQUIRED" });
  const stats: StandInStats = { jobs: 0, statusWrites: 0, markers: 0, writeErrors: 0, queued: 0, maxQueued: 0 };
  const queue: Array<() => Promise<void>> = [];
  let writing = 0;
  const pump = () => {
    while (writing < WRITES_AT_ONCE && queue.length > 0) {
      const work = queue.shift()!;
      writing++;
      void work().finally(() => {
        writing--;
        stats.queued = queue.length;
        pump();
      });
    }
  };
  const write = (bucket: string, key: string, body: unknown, counted: "statusWrites" | "markers") => {
    queue.push(async () => {
      try {
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(body), ContentType: "application/json" }));
        stats[counted]++;
      } catch (err) {
        stats.writeErrors++;
        stats.lastError = (err as Error).message;
      }
    });
    stats.queued = queue.length;
    stats.maxQueued = Math.max(stats.maxQueued, queue.length);
    pump();
  };

  const start = (job: StandInJob) => {
    stats.jobs++;
    const startedAt = new Date().toISOString();
    const identity = { jobId: job.jobId, launchId: job.launchId };
    write(job.bucket, job.statusKey, { ...startingStatus(identity, startedAt), phase: "run" }, "statusWrites");
    const heartbeat = setInterval(() => write(job.bucket, job.statusKey, { ...startingStatus(identity, startedAt), phase: "run", updatedAt: new Date().toISOString() }, "statusWrites"), heartbeatSeconds * 1000);
    setTimeout(() => {
      clearInterval(heartbeat);
      const finishedAt = new Date().toISOString();
      write(job.bucket, job.markerKey, successMarker({ ...identity, subject: job.subject, message: "succeeded (stand-in compute)", exitCode: 0, startedAt, finishedAt, outputs: { prefix: job.resultsPrefix, count: 0, bytes: 0, partial: false }, timings: { run: runSeconds } }), "markers");
    }, runSeconds * 1000);
  };

  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(stats));
      return;
    }
    if (req.method !== "POST" || req.url !== "/jobs") {
      res.writeHead(404).end();
      return;
    }
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      try {
        start(JSON.parse(body) as StandInJob);
        res.writeHead(204).end();
      } catch (err) {
        res.writeHead(400).end((err as Error).message);
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    process.stdout.write(JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 }) + "\n");
  });
  // Its parent (the benchmark) closes our stdin when it stops: no stand-in outlives it.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

if (require.main === module) main();
