/**
 * `gc` deletes a local job's inputs and outputs left on disk once no agent runs there (a 1,000-subject trial run
 * would otherwise keep ~41 GB of extracted input), keeps its logs, and never touches a job whose agent is alive.
 */
import { expect } from "chai";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { processFingerprint } from "../infra/local";
import { DriverSandbox, startDriverSandbox } from "../sandbox/driver-sandbox";

describe("gc: local job data left on disk", function () {
  this.timeout(120_000);
  let sandbox: DriverSandbox;
  before(async () => {
    sandbox = await startDriverSandbox();
  });
  after(async () => {
    await sandbox?.stop();
  });

  function localJob(jobId: string, agentId: string): string {
    const dir = path.join(sandbox.home, "local", jobId);
    for (const sub of ["inputs/t1", "outputs"]) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    fs.writeFileSync(path.join(dir, "inputs", "t1", "T1w.nii"), Buffer.alloc(4096, 7));
    fs.writeFileSync(path.join(dir, "outputs", "seg.nii"), "seg");
    fs.writeFileSync(path.join(dir, "agent.log"), "the agent's log\n");
    fs.writeFileSync(path.join(dir, "agent.pid"), agentId);
    return dir;
  }

  it("dry run lists, gc deletes inputs and outputs of ended jobs only, logs stay", async () => {
    const live = spawn("sleep", ["120"], { stdio: "ignore" });
    try {
      const ended = localJob("job-ended-20260101T000000000Z", "999999:12345"); // no such process
      const running = localJob("job-running-20260101T000000000Z", `${live.pid}:${processFingerprint(live.pid!)}`);

      const dry = await sandbox.run(["gc", "--dry-run", "--json"]);
      expect(dry.code, dry.stderr).to.equal(0);
      expect(JSON.parse(dry.stdout).localDataRemoved).to.deep.equal(["job-ended-20260101T000000000Z"]);
      expect(fs.existsSync(path.join(ended, "inputs")), "dry run deletes nothing").to.equal(true);

      const res = await sandbox.run(["gc", "--json"]);
      expect(res.code, res.stderr).to.equal(0);
      expect(JSON.parse(res.stdout).localDataRemoved).to.deep.equal(["job-ended-20260101T000000000Z"]);
      expect(fs.existsSync(path.join(ended, "inputs"))).to.equal(false);
      expect(fs.existsSync(path.join(ended, "outputs"))).to.equal(false);
      expect(fs.readFileSync(path.join(ended, "agent.log"), "utf8")).to.equal("the agent's log\n");
      expect(fs.existsSync(path.join(running, "inputs", "t1", "T1w.nii")), "a live agent's inputs").to.equal(true);
      expect(fs.existsSync(path.join(running, "outputs", "seg.nii")), "a live agent's outputs").to.equal(true);
    } finally {
      live.kill();
      fs.rmSync(path.join(sandbox.home, "local", "job-running-20260101T000000000Z"), { recursive: true, force: true });
    }
  });

  it("never follows a symlinked job directory, ignores names that are no job id, and never blocks on a FIFO pid file", async () => {
    const elsewhere = fs.mkdtempSync(path.join(sandbox.home, "..", "cc-elsewhere-"));
    for (const sub of ["inputs", "outputs"]) fs.mkdirSync(path.join(elsewhere, sub));
    fs.writeFileSync(path.join(elsewhere, "inputs", "precious.nii"), "not the tool's to delete");
    fs.symlinkSync(elsewhere, path.join(sandbox.home, "local", "job-linked-20260101T000000000Z"));
    const notAJob = path.join(sandbox.home, "local", ".backup");
    fs.mkdirSync(path.join(notAJob, "inputs"), { recursive: true });
    const fifoJob = localJob("job-fifo-20260101T000000000Z", "");
    fs.rmSync(path.join(fifoJob, "agent.pid"));
    spawnSync("mkfifo", [path.join(fifoJob, "agent.pid")]);

    const res = await sandbox.run(["gc", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(JSON.parse(res.stdout).localDataRemoved).to.deep.equal([]);
    expect(fs.readFileSync(path.join(elsewhere, "inputs", "precious.nii"), "utf8")).to.equal("not the tool's to delete");
    expect(fs.existsSync(path.join(notAJob, "inputs"))).to.equal(true);
    expect(fs.existsSync(path.join(fifoJob, "inputs")), "data beside an odd pid file is left alone").to.equal(true);
  });

  it("a crafted job id never names a directory outside the home: history ../../x is refused, nothing written", async () => {
    const victim = fs.mkdtempSync(path.join(sandbox.home, "..", "cc-victim-"));
    fs.writeFileSync(path.join(victim, "Pulumi.yaml"), "name: my-own-project\nruntime: python\n");
    const crafted = path.relative(path.join(sandbox.home, "work"), victim);
    for (const command of ["history", "cancel", "status"]) {
      const res = await sandbox.run([command, crafted]);
      expect(res.code, `${command}: ${res.stderr}`).to.equal(2);
    }
    expect(fs.readFileSync(path.join(victim, "Pulumi.yaml"), "utf8")).to.equal("name: my-own-project\nruntime: python\n");
  });
});
