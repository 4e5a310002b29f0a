/**
 * The driver when things go wrong, end to end with the real engine, moto S3 and the real agent (runtime `none`: the
 * job is a host process in a process group of its own, the hardest case to clean up):
 * a driver killed while waiting (status says so, `cancel` cleans up), a stack lock left by a driver killed during
 * `up` (`cancel` clears it), a frozen agent (stale heartbeat), a lost agent retried with `--retries`, and `gc`.
 */
import { expect } from "chai";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import type { JobRecord } from "../driver/jobindex";
import { thisHost } from "../driver/owner";
import { descendantsOf } from "../infra/local";
import type { JobResult } from "../driver/run";
import { startFakeImds } from "./support/imds";
import { DriverSandbox, localJobConfig, processAlive as alive, processesIn, pulumiBinary, SANDBOX_PASSPHRASE, startDriverSandbox, waitForRecord as waitForJobRecord } from "../sandbox/driver-sandbox";

/** The processes below `pid` whose command line matches. */
function descendantsMatching(pid: number, pattern: RegExp): number[] {
  return descendantsOf(pid).filter((p) => {
    try {
      return pattern.test(fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " "));
    } catch {
      return false;
    }
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("driver recovery end to end (real Pulumi engine, moto, real agent)", function () {
  this.timeout(15 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const SUBJECTS = ["sub-killed", "sub-locked", "sub-frozen", "sub-retried", "sub-lost", "sub-gc", "sub-other-host"];

  const records = () => sandbox.records();
  const waitForRecord = (predicate: (r: JobRecord) => boolean, what: string) => waitForJobRecord(sandbox, predicate, what);
  const agentPid = (r: JobRecord) => Number(/^local:(\d+):/.exec(r.instanceId ?? "")?.[1]);
  const localDir = (jobId: string) => path.join(sandbox.home, "local", jobId);
  const pulumiJson = (jobId: string, args: string[]) => sandbox.pulumiJson(jobId, args);
  const resourcesOf = (jobId: string) => sandbox.stackResources(jobId);
  const locksOf = (jobId: string) => {
    const dir = path.join(sandbox.home, "state", ".pulumi", "locks", "organization", "cloudcompute", jobId);
    // The file backend keeps a `.attrs` sidecar beside each lock.
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".json")) : [];
  };

  function expectNothingLeft(jobId: string): void {
    expect(resourcesOf(jobId), `resources in ${jobId}`).to.equal(0);
    expect(processesIn(localDir(jobId)), `processes of ${jobId}`).to.deep.equal([]);
    expect(locksOf(jobId), `locks of ${jobId}`).to.deep.equal([]);
  }

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_LOCAL_STOP_GRACE_MS: "3000" });
    await sandbox.seed(SUBJECTS);
    config = sandbox.writeConfig("Pulumi.recovery.yaml", {
      "cloudcompute:env": { HOME_MARK: sandbox.home },
      ...localJobConfig(sandbox, {
        image: "none",
        runtime: "none",
        // Long unless told otherwise by a file the test writes: lets a test decide when a job's work ends.
        command: ["sh", "-c", 'while [ ! -e "$HOME_MARK/go-$2" ]; do sleep 0.2; done; cp "$1" "$3/"', "sh", "{input}", "{subject}", "{output}"],
      }),
    });
  });
  after(async () => {
    // Whatever a failed assertion left behind.
    for (const r of records()) for (const pid of processesIn(localDir(r.jobId))) process.kill(pid, "SIGKILL");
    await sandbox?.stop();
  });
  const release = (subject: string) => fs.writeFileSync(path.join(sandbox.home, `go-${subject}`), "");

  it("a driver killed while waiting: `status` says so and `cancel` destroys the job's resources", async () => {
    let driver = 0;
    const running = sandbox.run(["--config", config, "--subject", "sub-killed"], { onSpawn: (c) => (driver = c.pid!) });
    const rec = await waitForRecord((r) => r.subject === "sub-killed" && r.state === "running", "sub-killed to run");
    await sleep(1000);
    expect(processesIn(localDir(rec.jobId)).length, "agent and its job").to.be.at.least(2);
    process.kill(driver, "SIGKILL");
    await running;
    expect(resourcesOf(rec.jobId)).to.be.greaterThan(0);

    const status = await sandbox.run(["status", rec.jobId]);
    expect(status.stdout).to.include(`its driver (pid ${driver}) is gone`).and.include(`cancel ${rec.jobId}`);
    const cancel = await sandbox.run(["cancel", rec.jobId]);
    expect(cancel.code, cancel.stderr).to.equal(0);
    expectNothingLeft(rec.jobId);
    expect(alive(agentPid(rec))).to.equal(false);
    expect(pulumiJson(rec.jobId, ["stack", "history", "--json"])[0].message).to.include("cancelled");
  });

  it("a lock left by a driver killed during `up` is cleared by `cancel`", async () => {
    let driver = 0;
    const running = sandbox.run(["--config", config, "--subject", "sub-locked"], { onSpawn: (c) => (driver = c.pid!) });
    const rec = await waitForRecord((r) => r.subject === "sub-locked", "sub-locked to be indexed");
    // Freeze the driver and its engine while the engine holds the lock. A lock seen between two operations (the engine
    // already gone) would make this a race, so then let them go on and catch the next moment.
    const deadline = Date.now() + 60_000;
    let engine: number[] = [];
    for (;;) {
      while (locksOf(rec.jobId).length === 0 && Date.now() < deadline) await sleep(20);
      expect(Date.now(), "lock during up").to.be.below(deadline);
      process.kill(driver, "SIGSTOP");
      engine = descendantsMatching(driver, /pulumi/);
      for (const pid of engine) process.kill(pid, "SIGSTOP");
      if (engine.length > 0 && locksOf(rec.jobId).length === 1) break;
      for (const pid of engine) process.kill(pid, "SIGCONT");
      process.kill(driver, "SIGCONT");
      await sleep(20);
    }
    // Then kill the engine and the driver, as a power cut would: engine first, so it cannot see its program go away.
    for (const pid of engine) process.kill(pid, "SIGKILL");
    process.kill(driver, "SIGKILL");
    await running;
    await sleep(500);
    expect(locksOf(rec.jobId), "stale lock").to.have.length(1);

    const cancel = await sandbox.run(["cancel", rec.jobId]);
    expect(cancel.code, cancel.stderr).to.equal(0);
    expect(resourcesOf(rec.jobId)).to.equal(0);
    expect(locksOf(rec.jobId)).to.deep.equal([]);
    // An agent started by a create the engine never recorded (a pending create) is reclaimed through its pid file.
    expect(processesIn(localDir(rec.jobId)), "agent processes left").to.deep.equal([]);
  });

  it("a frozen agent (stale heartbeat) fails the job with exit 1 and is stopped", async () => {
    let frozen = 0;
    const watcher = (async () => {
      const rec = await waitForRecord((r) => r.subject === "sub-frozen" && r.state === "running", "sub-frozen to run");
      await sleep(3000); // the agent has posted status by now
      frozen = agentPid(rec);
      process.kill(frozen, "SIGSTOP");
    })();
    const res = await sandbox.run(["--config", config, "--subject", "sub-frozen", "--heartbeat-timeout", "30", "--json"]);
    await watcher;
    expect(res.code, res.stderr).to.equal(1);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.reason).to.equal("heartbeat-lost");
    expect(result.message).to.match(/no status update for \d+ s \(limit 30 s\)/);
    expectNothingLeft(result.jobId);
    expect(alive(frozen)).to.equal(false);
  });

  it("retries a spot-interrupted job (--retries 1) and succeeds on the second attempt", async () => {
    const imds = await startFakeImds();
    try {
      const watcher = (async () => {
        const first = await waitForRecord((r) => r.subject === "sub-retried" && r.state === "running", "first attempt to run");
        await sleep(1000);
        imds.interrupt(); // EC2's two-minute notice: the agent stops and reports spot-interrupted
        await waitForRecord((r) => r.jobId === first.jobId && r.state !== "running", "first attempt to end");
        imds.clear();
        await waitForRecord((r) => r.subject === "sub-retried" && r.jobId !== first.jobId && r.state === "running", "second attempt to run");
        release("sub-retried");
        return first;
      })();
      const res = await sandbox.run(["--config", config, "--subject", "sub-retried", "--retries", "1", "--price-per-hour", "3.6", "--json"], {
        extraEnv: { CLOUDCOMPUTE_IMDS_ENDPOINT: imds.endpoint, CLOUDCOMPUTE_SPOT_POLL_MS: "300" },
      });
      const first = await watcher;
      expect(res.code, res.stderr).to.equal(0);
      const result = JSON.parse(res.stdout) as JobResult;
      expect(result.attempts).to.have.length(2);
      expect(result.attempts[0]).to.equal(first.jobId);
      expect(result.outcome).to.equal("succeeded");
      const firstRecord = records().find((r) => r.jobId === first.jobId)!;
      expect(firstRecord.reason).to.equal("spot-interrupted");
      expect(records().find((r) => r.jobId === result.jobId)?.retryOf).to.equal(first.jobId);
      for (const jobId of result.attempts) expectNothingLeft(jobId);
      // Both attempts are billed ($0.001 a second here): the job's cost is their sum, the lost one's cost said apart.
      const [lost, last] = result.attemptCosts!;
      expect([lost.jobId, last.jobId]).to.deep.equal(result.attempts);
      expect(lost.reason).to.equal("spot-interrupted");
      expect(lost.costUsd).to.be.greaterThan(0);
      expect(firstRecord.attemptCost?.costUsd, "the lost attempt's record keeps its cost").to.equal(lost.costUsd);
      expect(result.costUsd).to.be.closeTo(lost.costUsd! + last.costUsd!, 1e-9);
      expect(result.spot).to.include({ lostAttempts: 1, interruptionsUsd: lost.costUsd });
    } finally {
      await imds.close();
    }
  });

  it("does not retry a compute that ended without a marker and without a cause EC2 names (--retries 1): exit 1, one attempt", async () => {
    const watcher = (async () => {
      const first = await waitForRecord((r) => r.subject === "sub-lost" && r.state === "running", "the job to run");
      await sleep(1000);
      for (const pid of processesIn(localDir(first.jobId))) process.kill(pid, "SIGKILL"); // the "instance" dies
    })();
    const res = await sandbox.run(["--config", config, "--subject", "sub-lost", "--retries", "1", "--json"]);
    await watcher;
    expect(res.code, res.stderr).to.equal(1);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.attempts).to.have.length(1);
    expect(result.reason).to.equal("instance-lost");
    expectNothingLeft(result.jobId);
  });

  it("`gc` leaves alone a stack owned by a driver on another host (shared backend), by record or by stack tags; `cancel` still cleans it up", async () => {
    let driver = 0;
    const running = sandbox.run(["--config", config, "--subject", "sub-other-host"], { onSpawn: (c) => (driver = c.pid!) });
    const rec = await waitForRecord((r) => r.subject === "sub-other-host" && r.state === "running", "sub-other-host to run");
    process.kill(driver, "SIGKILL");
    await running;
    // As another machine's job looks from here: its record names another host...
    fs.writeFileSync(path.join(sandbox.home, "jobs", `${rec.jobId}.json`), JSON.stringify({ ...rec, driverHost: "lab-machine-2" }));
    const byRecord = await sandbox.run(["gc", "--json"]);
    expect(byRecord.code, byRecord.stderr).to.equal(0);
    expect(JSON.parse(byRecord.stdout).destroyed).to.deep.equal([]);
    expect(JSON.parse(byRecord.stdout).leftAlone.map((l: { jobId: string }) => l.jobId)).to.deep.equal([rec.jobId]);
    expect(byRecord.stderr).to.include("lab-machine-2");
    // ...or there is no local record at all and only the stack's tags in the backend say whose it is.
    fs.rmSync(path.join(sandbox.home, "jobs", `${rec.jobId}.json`));
    const tagged = spawnSync(pulumiBinary(), ["stack", "tag", "set", "cloudcompute:owner-host", "lab-machine-2", "--stack", rec.jobId], {
      cwd: path.join(sandbox.home, "work", rec.jobId),
      env: { ...process.env, PULUMI_BACKEND_URL: pathToFileURL(path.join(sandbox.home, "state")).href, PULUMI_CONFIG_PASSPHRASE: SANDBOX_PASSPHRASE, PULUMI_SKIP_UPDATE_CHECK: "true" },
      encoding: "utf8",
    });
    expect(tagged.status, tagged.stderr).to.equal(0);
    const byTags = await sandbox.run(["gc", "--json"]);
    expect(JSON.parse(byTags.stdout).destroyed).to.deep.equal([]);
    expect(JSON.parse(byTags.stdout).leftAlone.map((l: { jobId: string }) => l.jobId)).to.deep.equal([rec.jobId]);
    expect(resourcesOf(rec.jobId)).to.be.greaterThan(0);
    const cancel = await sandbox.run(["cancel", rec.jobId]);
    expect(cancel.code, cancel.stderr).to.equal(0);
    expect(resourcesOf(rec.jobId)).to.equal(0);
    for (const pid of processesIn(localDir(rec.jobId))) expect(alive(pid), `process ${pid}`).to.equal(false);
  });

  it("`cancel` never signals a process that only reuses a dead driver's PID (start time differs)", async () => {
    const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const jobId = "job-sub-reused-pid-20261128T000000000Z";
      const forged: Partial<JobRecord> = {
        jobId, subject: "sub-reused-pid", platform: "local", backend: "file:///nowhere", state: "running", createdAt: new Date().toISOString(),
        driverPid: sleeper.pid, driverHost: thisHost(), driverPidStart: "1", markerUrl: "s3://cc-study/m", resultsUrl: "s3://cc-study/r/", statusUrl: "s3://cc-study/s", logUrl: "s3://cc-study/l",
      };
      fs.mkdirSync(path.join(sandbox.home, "jobs"), { recursive: true });
      fs.writeFileSync(path.join(sandbox.home, "jobs", `${jobId}.json`), JSON.stringify(forged));
      const cancel = await sandbox.run(["cancel", jobId]);
      expect(cancel.stderr).not.to.include("interrupting driver");
      expect(sleeper.exitCode, "the sleeper was signalled").to.equal(null);
      expect(alive(sleeper.pid!)).to.equal(true);
      const status = await sandbox.run(["status", jobId]);
      expect(status.stdout).to.include("is gone");
    } finally {
      sleeper.kill("SIGKILL");
      fs.rmSync(path.join(sandbox.home, "jobs", "job-sub-reused-pid-20261128T000000000Z.json"), { force: true });
    }
  });

  it("`gc` destroys stacks whose driver is gone and leaves finished ones alone", async () => {
    let driver = 0;
    const running = sandbox.run(["--config", config, "--subject", "sub-gc"], { onSpawn: (c) => (driver = c.pid!) });
    const rec = await waitForRecord((r) => r.subject === "sub-gc" && r.state === "running", "sub-gc to run");
    process.kill(driver, "SIGKILL");
    await running;
    const dry = await sandbox.run(["gc", "--dry-run", "--json"]);
    expect(JSON.parse(dry.stdout).destroyed).to.deep.equal([rec.jobId]);
    expect(resourcesOf(rec.jobId)).to.be.greaterThan(0);
    const gc = await sandbox.run(["gc", "--json"]);
    expect(gc.code, gc.stderr).to.equal(0);
    expect(JSON.parse(gc.stdout).destroyed).to.deep.equal([rec.jobId]);
    expectNothingLeft(rec.jobId);
  });
});
