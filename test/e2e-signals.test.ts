/**
 * Signals a driver meets in real use, end to end (real Pulumi engine, moto, runtime none): a terminal's Ctrl-C (to
 * the whole foreground process group, so the engine gets it too) during `up` and while waiting, a hang-up (closed
 * ssh session), and a batch killed (SIGKILL) while its jobs run and started again (resume). Each must end with the
 * job's resources destroyed — never an instance left running, never a pending create dropped from state.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { JobRecord } from "../driver/jobindex";
import { CLI, REPO_ROOT, DriverSandbox, batchEventsOf, batchResultOf, localJobConfig, markersBySubject, processesIn, startDriverSandbox, waitForRecord as waitForJobRecord } from "../sandbox/driver-sandbox";
import { scenario } from "./support/reliability";

/** Is a `pulumi <operation>` of this stack running? */
function engineRunning(operation: string, jobId: string): boolean {
  return fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).some((pid) => {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return path.basename(argv[0]) === "pulumi" && argv[1] === operation && argv.includes(jobId);
    } catch {
      return false;
    }
  });
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("driver end to end: signals (real Pulumi engine, moto)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const RESUME_SUBJECTS = ["sub-resume-1", "sub-resume-2", "sub-resume-3", "sub-resume-4"];
  const SUBJECTS = ["sub-ctrlc-up", "sub-ctrlc-wait", "sub-ctrlc-npm", "sub-hangup", "sub-pty-hangup", ...RESUME_SUBJECTS];

  const waitForRecord = (predicate: (r: JobRecord) => boolean, what: string, timeoutMs?: number) => waitForJobRecord(sandbox, predicate, what, timeoutMs);

  function expectNothingLeft(jobId: string): void {
    expect(sandbox.stackResources(jobId), `resources left in ${jobId}`).to.equal(0);
    expect(processesIn(path.join(sandbox.home, "local", jobId)), "agent processes left").to.deep.equal([]);
    const state = JSON.parse(JSON.stringify(sandbox.pulumiJson(jobId, ["stack", "export"])));
    expect(state.deployment.pending_operations ?? [], "pending operations in state").to.deep.equal([]);
  }

  before(async () => {
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    await sandbox.seed(SUBJECTS);
    config = sandbox.writeConfig("signals.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'sleep 20; cp "$1" "$2/"', "sh", "{input}", "{output}"] }));
  });
  after(async () => {
    for (const r of sandbox?.records() ?? []) for (const pid of processesIn(path.join(sandbox.home, "local", r.jobId))) process.kill(pid, "SIGKILL");
    await sandbox?.stop();
  });

  for (const [subject, when] of [
    ["sub-ctrlc-up", "during up"],
    ["sub-ctrlc-wait", "while waiting"],
  ] as const) {
    it(`a terminal Ctrl-C ${when} (SIGINT to the driver's whole process group, engine included) ends in a clean destroy, exit 130`, () =>
      scenario("fault", "driver signal", `terminal Ctrl-C ${when}`, "exit 130; 0 resources, no pending operation, no agent process", async () => {
      let group = 0;
      const running = sandbox.run(["--config", config, "--subject", subject, "--json"], { detached: true, onSpawn: (c) => (group = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === subject && r.state === (when === "during up" ? "creating" : "running"), `${subject} ${when}`);
      if (when === "during up") await waitFor(() => engineRunning("up", rec.jobId), "the engine's `pulumi up`");
      else await new Promise((r) => setTimeout(r, 1000));
      process.kill(-group, "SIGINT");
      const res = await running;
      expect(res.code, res.stderr).to.equal(130);
      expectNothingLeft(rec.jobId);
      return `exit ${res.code}; ${sandbox.stackResources(rec.jobId)} resources; no agent process`;
    }));
  }

  it("a terminal Ctrl-C through `npm run job` (npm forwards the signal too, so the driver gets it twice at once) is one Ctrl-C: a clean destroy", () =>
    scenario("fault", "driver signal", "terminal Ctrl-C through npm run job (the signal arrives twice)", "one clean stop: interrupted, 0 resources, never 'leaving now'", async () => {
      const env: NodeJS.ProcessEnv = { ...process.env, ...sandbox.env };
      delete env.PULUMI_BACKEND_URL;
      const child = spawn("npm", ["run", "-s", "job", "--", "--config", config, "--subject", "sub-ctrlc-npm", "--json"], { cwd: REPO_ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.stdout.resume();
      const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
      const rec = await waitForRecord((r) => r.subject === "sub-ctrlc-npm" && r.state === "running", "sub-ctrlc-npm to run");
      await new Promise((r) => setTimeout(r, 1000));
      process.kill(-child.pid!, "SIGINT"); // the terminal: npm, the driver and anything else in the foreground group
      const code = await exited;
      expect(stderr, "the second copy taken for a second Ctrl-C").to.not.include("leaving now");
      const done = sandbox.records().find((r) => r.jobId === rec.jobId)!;
      expect(done.state, stderr).to.equal("interrupted");
      expectNothingLeft(rec.jobId);
      return `npm exit ${code}; ${done.state}; ${sandbox.stackResources(rec.jobId)} resources`;
    }));

  it("a hang-up (closed terminal or ssh session) while waiting is a clean stop like Ctrl-C, exit 130", () =>
    scenario("fault", "driver signal", "SIGHUP while waiting", "exit 130, outcome interrupted; nothing left", async () => {
    let driver = 0;
    const running = sandbox.run(["--config", config, "--subject", "sub-hangup", "--json"], { onSpawn: (c) => (driver = c.pid!) });
    const rec = await waitForRecord((r) => r.subject === "sub-hangup" && r.state === "running", "sub-hangup to run");
    process.kill(driver, "SIGHUP");
    const res = await running;
    expect(res.code, res.stderr).to.equal(130);
    expect(JSON.parse(res.stdout).outcome).to.equal("interrupted");
    expectNothingLeft(rec.jobId);
    return `exit ${res.code}, ${JSON.parse(res.stdout).outcome}; ${sandbox.stackResources(rec.jobId)} resources`;
  }));

  it("a real terminal hang-up (the driver on a pty whose other end closes: SIGHUP, then EIO on every write) is a clean stop", () =>
    scenario("fault", "driver signal", "terminal hang-up on a real pty while waiting", "ends by SIGHUP after teardown: interrupted; 0 resources, no agent process", async () => {
      // python's pty.fork makes the driver a session leader with the pty as its controlling terminal, as an ssh
      // session does; closing the master end is the session going away.
      const trigger = path.join(sandbox.home, "hang-up-now");
      const script = [
        "import os, pty, select, sys, json",
        "pid, fd = pty.fork()",
        "if pid == 0:",
        "    os.execvpe(sys.argv[1], sys.argv[1:], os.environ)",
        "while not os.path.exists(os.environ['PTY_TRIGGER']):",
        "    r, _, _ = select.select([fd], [], [], 0.1)",
        "    if r:",
        "        try: os.read(fd, 65536)",
        "        except OSError: break",
        "os.close(fd)",
        "_, status = os.waitpid(pid, 0)",
        "print(json.dumps({'code': os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, 'signal': os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}))",
      ].join("\n");
      const env: NodeJS.ProcessEnv = { ...process.env, ...sandbox.env, PTY_TRIGGER: trigger };
      delete env.PULUMI_BACKEND_URL;
      const child = spawn("python3", ["-c", script, process.execPath, CLI, "--config", config, "--subject", "sub-pty-hangup"], { cwd: sandbox.home, env, stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (c: Buffer) => (out += c.toString()));
      const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
      const rec = await waitForRecord((r) => r.subject === "sub-pty-hangup" && r.state === "running", "sub-pty-hangup to run");
      await new Promise((r) => setTimeout(r, 1000));
      fs.writeFileSync(trigger, "");
      await exited;
      const status = JSON.parse(out.trim().split("\n").pop()!) as { code: number | null; signal: number | null };
      // Ended by the hang-up's own signal after its cleanup (Node's normal exit would abort restoring the lost tty).
      expect(status, "the driver's exit").to.deep.equal({ code: null, signal: 1 });
      const done = sandbox.records().find((r) => r.jobId === rec.jobId)!;
      expect(done.state).to.equal("interrupted");
      expectNothingLeft(rec.jobId);
      return `ended by signal ${status.signal} (SIGHUP), ${done.state}; ${sandbox.stackResources(rec.jobId)} resources`;
    }));

  it("a batch killed (SIGKILL) mid-way and started again: it adopts its running jobs, launches the rest, every subject succeeds exactly once, no stack left up", () =>
    scenario("fault", "driver signal", "batch SIGKILLed with jobs running, then started again", "resumed: running jobs adopted, each subject one job and one success, nothing left", async () => {
    const subjectsFile = path.join(sandbox.home, "resume.txt");
    fs.writeFileSync(subjectsFile, RESUME_SUBJECTS.join("\n") + "\n");
    const args = ["--config", config, "--subjects-file", subjectsFile, "--concurrency", "3", "--engine-concurrency", "2"];
    let parent = 0;
    const first = sandbox.run(args, { onSpawn: (c) => (parent = c.pid!) });
    // Killed once two of its jobs run: a third is launching or queued, the fourth queued.
    await waitFor(() => sandbox.records().filter((r) => RESUME_SUBJECTS.includes(r.subject) && r.state === "running").length >= 2, "two jobs to run", 180_000);
    process.kill(parent, "SIGKILL");
    await first;
    const batchId = sandbox.records().find((r) => RESUME_SUBJECTS.includes(r.subject))!.batchId;
    const again = await sandbox.run([...args, "--json"]);
    expect(again.code, again.stderr).to.equal(0);
    const result = batchResultOf(again.stdout);
    expect(result.batchId, "the same batch, resumed").to.equal(batchId);
    expect(result.entries.map((e) => [e.subject, e.outcome])).to.deep.equal(RESUME_SUBJECTS.map((s) => [s, "succeeded"]));
    const adopted = batchEventsOf(again.stdout).filter((e) => e.event === "job-running" && e.adopted);
    expect(adopted.length, "jobs adopted, not launched again").to.be.at.least(2);
    const markers = await markersBySubject(sandbox);
    for (const subject of RESUME_SUBJECTS) {
      const jobs = sandbox.records().filter((r) => r.subject === subject);
      expect(jobs.map((r) => r.state), `${subject}: one job, launched once`).to.deep.equal(["succeeded"]);
      expect(markers.get(subject), `${subject}'s markers`).to.deep.equal(["succeeded"]);
      expectNothingLeft(jobs[0].jobId);
    }
    return `${adopted.length} adopted, ${RESUME_SUBJECTS.length - adopted.length} launched after the restart; ${RESUME_SUBJECTS.length} jobs for ${RESUME_SUBJECTS.length} subjects`;
  }));
});
