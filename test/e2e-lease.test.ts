/**
 * One subject, one running job, across drivers, end to end (real Pulumi engine, moto S3, local platform): a run
 * refused while another driver holds the subject's lease (nothing created); a driver that loses its lease tears its
 * job down (lease-lost); two batches started at once on the same subjects run each subject exactly once (counted by
 * the completion markers). 4 subjects here (the 2-core machine runs both batches' engines at once); the 20-subject
 * figure is `duplicate_runs` of `npm run bench -- scale`, counted the same way (markersBySubject).
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import type { JobResult } from "../driver/run";
import { readLease } from "../common/lease";
import { jobLayout } from "../job/layout";
import { DriverSandbox, localJobConfig, markersBySubject, processesIn, startDriverSandbox, waitForRecord, batchResultOf } from "../sandbox/driver-sandbox";

describe("subject lease end to end (real Pulumi engine, moto, local platform)", function () {
  this.timeout(15 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const SUBJECTS = ["NDARINV0000LEA1", "NDARINV0000LEA2", "NDARINV0000LEA3", "NDARINV0000LEA4"];
  const leaseOf = (subject: string) => jobLayout({ jobId: "-", subject, outputs: { prefix: `s3://${sandbox.bucket}/results` } }).subjectLease;
  const stackFiles = () => {
    const dir = path.join(sandbox.home, "state", ".pulumi", "stacks", "cloudcompute");
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  };

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_LOCAL_STOP_GRACE_MS: "3000" });
    await sandbox.seed([...SUBJECTS, "NDARINV0000HELD", "NDARINV0000LOST"]);
    config = sandbox.writeConfig("Pulumi.lease.yaml", {
      "cloudcompute:env": { HOME_MARK: sandbox.home },
      ...localJobConfig(sandbox, {
        image: "none",
        runtime: "none",
        // A few seconds of work (so two drivers overlap), forever for a subject whose `hold-<subject>` file exists.
        command: ["sh", "-c", 'sleep 3; while [ -e "$HOME_MARK/hold-$2" ]; do sleep 0.2; done; cp "$1" "$3/"', "sh", "{input}", "{subject}", "{output}"],
      }),
    });
  });
  after(async () => {
    for (const r of sandbox?.records() ?? []) for (const pid of processesIn(path.join(sandbox.home, "local", r.jobId))) process.kill(pid, "SIGKILL");
    await sandbox?.stop();
  });

  it("a run is refused while another driver holds the subject, naming it; nothing is created", async () => {
    const subject = "NDARINV0000HELD";
    const now = new Date();
    const lease = {
      apiVersion: "cloudcompute/v1", kind: "subject-lease", subject, leaseId: "other", periodSeconds: 300,
      holder: { user: "carol", host: "lab-ws9", pid: 31337, jobId: "job-NDARINV0000HELD-elsewhere" },
      since: now.toISOString(), renewedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString(),
    };
    const loc = leaseOf(subject);
    await sandbox.s3.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: JSON.stringify(lease) }));
    const before = stackFiles();
    const res = await sandbox.run(["--config", config, "--subject", subject]);
    expect(res.code, res.stderr).to.equal(2);
    expect(res.stderr).to.include(`subject ${subject} is being run by carol@lab-ws9 (pid 31337, job job-NDARINV0000HELD-elsewhere) since ${lease.since}`);
    // The expiry by S3's clock: a period after S3 wrote it (about the holder's expiresAt here, its clock being right).
    const expires = /the lease expires at (\S+) /.exec(res.stderr)?.[1];
    expect(Math.abs(Date.parse(expires!) - Date.parse(lease.expiresAt)), res.stderr).to.be.lessThan(5_000);
    expect(stackFiles()).to.deep.equal(before);
    expect(sandbox.records().filter((r) => r.subject === subject)).to.deep.equal([]);
    expect((await readLease(sandbox.s3, loc)).lease?.leaseId, "the holder's lease stays").to.equal("other");
  });

  it("a driver whose lease is taken over tears its job down and reports lease-lost", async () => {
    const subject = "NDARINV0000LOST";
    fs.writeFileSync(path.join(sandbox.home, `hold-${subject}`), "");
    const running = sandbox.run(["--config", config, "--subject", subject, "--lease-seconds", "10", "--json"]);
    const rec = await waitForRecord(sandbox, (r) => r.subject === subject && r.state === "running", `${subject} to run`);
    const loc = leaseOf(subject);
    const held = await readLease(sandbox.s3, loc);
    expect(held.lease?.holder).to.include({ jobId: rec.jobId, launchId: rec.launchId, pid: rec.driverPid });
    // Another driver takes it over (as it would once this one failed to renew for a whole period).
    await sandbox.s3.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: JSON.stringify({ ...held.lease, leaseId: "thief", holder: { ...held.lease!.holder, user: "dave", pid: 4444, jobId: "job-thief" } }) }));
    const res = await running;
    expect(res.code, res.stderr).to.equal(3);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.reason).to.equal("lease-lost");
    expect(result.message).to.include("taken over by dave@").and.include("job job-thief");
    expect(sandbox.stackResources(rec.jobId), "resources left").to.equal(0);
    expect(processesIn(path.join(sandbox.home, "local", rec.jobId))).to.deep.equal([]);
    expect((await readLease(sandbox.s3, loc)).lease?.leaseId, "the new holder's lease stays").to.equal("thief");
    fs.rmSync(path.join(sandbox.home, `hold-${subject}`));
  });

  it("two batches started at once on the same subjects: each subject runs exactly once", async () => {
    const subjectsFile = path.join(sandbox.home, "lease-subjects.txt");
    fs.writeFileSync(subjectsFile, SUBJECTS.join("\n") + "\n");
    const batch = () => sandbox.run(["--config", config, "--subjects-file", subjectsFile, "--concurrency", "2", "--json"]);
    const [a, b] = await Promise.all([batch(), batch()]);
    const results = [a, b].map((res) => batchResultOf(res.stdout));
    const markers = await markersBySubject(sandbox);
    for (const subject of SUBJECTS) {
      expect(markers.get(subject), `markers of ${subject}`).to.deep.equal(["succeeded"]);
      const outcomes = results.map((r) => r.entries.find((e) => e.subject === subject)!.outcome).sort();
      // One batch ran it; the other found it held by the first, or (once done) succeeded already.
      expect(outcomes.filter((o) => o === "succeeded"), `${subject}: ${outcomes}`).to.have.length(1);
      expect(outcomes.filter((o) => o !== "succeeded")[0]).to.be.oneOf(["held", "skipped"]);
      expect((await readLease(sandbox.s3, leaseOf(subject))).etag, `${subject}'s lease released`).to.equal(undefined);
    }
    // The first subjects are contested while they run (3 s of work each): the loser says who holds them.
    const held = results.flatMap((r) => r.entries).filter((e) => e.outcome === "held");
    expect(held.length, "subjects reported held by the other batch").to.be.at.least(1);
    for (const entry of held) expect(entry.message).to.match(/^subject NDARINV0000LEA\d is being run by \S+@\S+ \(pid \d+, job job-NDARINV0000LEA\d-\d{8}T\d{9}Z\) since /);
  });
});
