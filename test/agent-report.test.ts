/**
 * The agent's log under bad luck: a disk that is full (writes to /dev/full fail with ENOSPC) must not crash the agent,
 * and a long log is uploaded as head + tail, never read whole (real moto S3).
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { JobLog, LOG_UPLOAD_HEAD_BYTES, LOG_UPLOAD_TAIL_BYTES, Reporter } from "../agent/report";
import { getBytes, newBucket, sharedMoto, testS3 } from "./support/fixtures";

describe("agent log (moto S3)", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "cc-report-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("a log on a full disk (ENOSPC on every write) does not crash the agent; flush and close still return", async function () {
    if (process.platform !== "linux") this.skip();
    const log = new JobLog("/dev/full");
    for (let i = 0; i < 100; i++) log.line(`line ${i} `.repeat(100));
    log.raw().write(Buffer.alloc(70_000, 1));
    await log.flush();
    await new Promise((resolve) => setTimeout(resolve, 50)); // give an unhandled 'error' event its chance to crash us
    expect(log.writeError && (log.writeError as NodeJS.ErrnoException).code).to.equal("ENOSPC");
    log.line("after the failure");
    await log.close();
  });

  it("echoes the agent's own lines (the console) but never the job's output, which goes to the log file only", async () => {
    const file = path.join(dir, "echo.log");
    const log = new JobLog(file, true);
    const echoed: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      echoed.push(chunk.toString());
      return true;
    }) as typeof process.stderr.write;
    try {
      log.line("phase run");
      log.raw().write(Buffer.from("subject NDARINV1A2B3C4D: hippocampus 4123 mm3\n"));
    } finally {
      process.stderr.write = original;
    }
    await log.close();
    expect(echoed.join("")).to.include("phase run").and.not.include("hippocampus");
    expect(readFileSync(file, "utf8")).to.include("phase run").and.include("hippocampus 4123 mm3");
  });

  it("uploads a long log as head + elision line + tail, and only when it changed", async () => {
    await sharedMoto();
    const s3 = testS3();
    const bucket = await newBucket(s3, "cc-report");
    const file = path.join(dir, "agent.log");
    const total = LOG_UPLOAD_HEAD_BYTES + LOG_UPLOAD_TAIL_BYTES + 3 * 1024 * 1024;
    const body = Buffer.alloc(total, "m");
    body.write("HEAD-START", 0);
    body.write("TAIL-END", total - 8);
    writeFileSync(file, body);
    const log = new JobLog(file);
    const location = { bucket, key: "job/agent.log" };
    const reporter = new Reporter(s3, { status: { bucket, key: "job/status.json" }, log: location }, { jobId: "job-1" }, log);
    await reporter.uploadLog();
    const uploaded = await getBytes(s3, bucket, location.key);
    expect(uploaded.length).to.be.lessThan(LOG_UPLOAD_HEAD_BYTES + LOG_UPLOAD_TAIL_BYTES + 200);
    expect(uploaded.subarray(0, 10).toString()).to.equal("HEAD-START");
    expect(uploaded.subarray(-8).toString()).to.equal("TAIL-END");
    expect(uploaded.toString("utf8", LOG_UPLOAD_HEAD_BYTES, LOG_UPLOAD_HEAD_BYTES + 120)).to.match(/… 3145728 bytes elided here/);
    await log.close();
  });
});
