/**
 * End to end (real Pulumi engine, moto, local platform): an engine worker that dies mid-launch (OOM killer, a crash)
 * after its compute exists. The batch finds what it created (the job's record) and tears it down in another worker —
 * after the dead worker's engine lets go of the stack — and reports engine-worker-lost: never a compute left running.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { liveEngineWorkers } from "../driver/batch-resume";
import { DriverSandbox, batchResultOf, localJobConfig, processesIn, startDriverSandbox, waitForRecord } from "../sandbox/driver-sandbox";

/** Pulumi plugin processes started for this sandbox (their environment names its CLOUDCOMPUTE_HOME). */
function pluginsOf(home: string): number[] {
  return fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("dynamic-provider") && fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`CLOUDCOMPUTE_HOME=${home}`);
    } catch {
      return false;
    }
  });
}

describe("an engine worker killed mid-launch (real Pulumi engine, moto, local platform)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const SUBJECT = "sub-worker-crash";

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    await sandbox.seed([SUBJECT]);
    config = sandbox.writeConfig("crash.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'sleep 60; cp "$1" "$2/"', "sh", "{input}", "{output}"] }));
  });
  after(async () => {
    for (const r of sandbox?.records() ?? []) for (const pid of processesIn(path.join(sandbox.home, "local", r.jobId))) process.kill(pid, "SIGKILL");
    // The killed worker's engine may leave its dynamic-provider plugin behind (its language host died under it).
    for (const pid of pluginsOf(sandbox.home)) process.kill(pid, "SIGKILL");
    await sandbox?.stop();
  });

  it("the batch tears down a job whose launch worker died after the compute started, and reports it", async () => {
    const subjectsFile = path.join(sandbox.home, "crash.txt");
    fs.writeFileSync(subjectsFile, `${SUBJECT}\n`);
    const running = sandbox.run(["--config", config, "--subjects-file", subjectsFile, "--engine-concurrency", "1", "--json"]);
    // The compute exists (the local agent runs in the job's directory) while the launch worker is still up.
    let killed: number[] = [];
    let jobId = "";
    const deadline = Date.now() + 180_000;
    while (killed.length === 0 && Date.now() < deadline) {
      const rec = sandbox.records().find((r) => r.subject === SUBJECT);
      if (rec?.batchId && processesIn(path.join(sandbox.home, "local", rec.jobId)).length > 0) {
        jobId = rec.jobId;
        killed = liveEngineWorkers(rec.batchId);
        for (const pid of killed) process.kill(pid, "SIGKILL");
        if (killed.length === 0) break; // the worker already answered: this run cannot show it
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(killed.length, "a launch worker was killed while its compute ran").to.be.greaterThan(0);
    const res = await running;
    const entry = batchResultOf(res.stdout).entries[0];
    const left = processesIn(path.join(sandbox.home, "local", jobId));
    const record = await waitForRecord(sandbox, (r) => r.jobId === jobId, jobId);
    expect({ outcome: entry.outcome, reason: entry.reason, agentProcessesLeft: left.length, record: record.state }, `${entry.message}`).to.deep.equal({ outcome: "error", reason: "engine-worker-lost", agentProcessesLeft: 0, record: "error" });
    expect(sandbox.stackResources(jobId), "resources left in the stack").to.equal(0);
  });
});
