/**
 * The fault matrix through the driver, end to end (real Pulumi engine, moto S3, the real agent as a local process,
 * podman + runc where a container matters): what bad luck does to a job — its agent killed mid-download and
 * mid-upload, a missing input, an expired presigned URL, a missing image, a container killed with exit 137, a full
 * disk, the max runtime, the driver signalled before `up` and during `destroy`, killed during `destroy`, and an
 * update cut off mid-create whose process the state never recorded (a pending create). Each must end with the
 * stack empty, no process or container left, no success claimed and nothing written into the subject's results.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { JobRecord } from "../driver/jobindex";
import type { JobResult } from "../driver/run";
import { DriverSandbox, localJobConfig, processesIn, pulumiBinary, SANDBOX_PASSPHRASE, startDriverSandbox, waitForRecord as waitForJobRecord } from "../sandbox/driver-sandbox";
import { startExpiryProxy, type ExpiryProxy } from "./support/s3-expiry-proxy";
import { startFaultProxy, type FaultProxy } from "./support/fault-proxy";
import { podmanAvailable, podmanTestEnv } from "../sandbox/podman";
import { removeJobContainers } from "../infra/local";
import { scenario } from "./support/reliability";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("driver end to end: the fault matrix (real Pulumi engine, moto, real agent)", function () {
  this.timeout(15 * 60_000);
  let sandbox: DriverSandbox;
  let image: string;
  let registry: string;
  let copyConfig: string;
  const SUBJECTS = ["sub-kill-download", "sub-kill-upload", "sub-presigned", "sub-no-image", "sub-exit137", "sub-disk-full", "sub-max-runtime", "sub-term-before-up", "sub-term-destroy", "sub-kill-destroy", "sub-pending-create", "sub-no-network", "sub-env", "sub-finished-alone"];

  const waitForRecord = (predicate: (r: JobRecord) => boolean, what: string, timeoutMs?: number) => waitForJobRecord(sandbox, predicate, what, timeoutMs);
  const agentPid = (r: JobRecord) => Number(/^local:(\d+):/.exec(r.instanceId ?? "")?.[1]);
  const localDir = (jobId: string) => path.join(sandbox.home, "local", jobId);
  const containersOf = (jobId: string) =>
    spawnSync("podman", ["ps", "-a", "--filter", `name=cloudcompute-${jobId}`, "--format", "{{.Names}}"], { encoding: "utf8" }).stdout.trim();
  /** What the subject's results hold: must stay empty for every failed job here. */
  const resultsOf = async (subject: string) =>
    ((await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: `results/${subject}/` }))).Contents ?? []).map((o) => o.Key!);
  const markerOf = async (jobId: string) => {
    const res = await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: `results/_cloudcompute/${jobId}/marker.json` })).catch(() => undefined);
    return res ? JSON.parse(await res.Body!.transformToString()) : undefined;
  };

  /** The stack holds nothing, no update is pending, no agent process or container is left. */
  function expectNothingLeft(jobId: string): void {
    expect(sandbox.stackResources(jobId), `resources left in ${jobId}`).to.equal(0);
    const state = sandbox.pulumiJson(jobId, ["stack", "export"]);
    expect(state.deployment.pending_operations ?? [], "pending operations in state").to.deep.equal([]);
    expect(processesIn(localDir(jobId)), "agent processes left").to.deep.equal([]);
    expect(containersOf(jobId), "containers left").to.equal("");
    for (const dir of ["inputs", "outputs"]) expect(fs.existsSync(path.join(localDir(jobId), dir)), `the subject's ${dir} left on disk`).to.equal(false);
  }

  /** A failed job: exit 1 with `reason`, no success marker, nothing in the subject's results, nothing left running. */
  async function expectFailedCleanly(res: { code: number | null; stdout: string; stderr: string }, subject: string, reason: string | RegExp): Promise<JobResult> {
    expect(res.code, res.stderr).to.equal(1);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.outcome).to.equal("failed");
    if (typeof reason === "string") expect(result.reason, result.message).to.equal(reason);
    else expect(result.reason, result.message).to.match(reason);
    expect((await markerOf(result.jobId))?.outcome, "marker").to.not.equal("succeeded");
    expect(await resultsOf(subject), "objects in the subject's results").to.deep.equal([]);
    expectNothingLeft(result.jobId);
    return result;
  }

  const runJson = (args: string[], extraEnv?: Record<string, string>) => sandbox.run([...args, "--json"], { extraEnv });

  before(async function () {
    if (!podmanAvailable()) throw new Error("podman is required for the e2e tests");
    const podman = await podmanTestEnv();
    image = podman.registryImage;
    registry = podman.registry;
    sandbox = await startDriverSandbox({ ...podman.env, CLOUDCOMPUTE_POLL_MS: "300", CLOUDCOMPUTE_LOCAL_STOP_GRACE_MS: "3000" });
    await sandbox.seed(SUBJECTS);
    copyConfig = sandbox.writeConfig(
      "faults.yaml",
      localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'sleep 2; cp "$1" "$2/"', "sh", "{input}", "{output}"] }),
    );
  });
  after(async () => {
    for (const r of sandbox?.records() ?? []) for (const pid of processesIn(localDir(r.jobId))) process.kill(pid, "SIGKILL");
    await sandbox?.stop();
  });

  it("a missing input fails the job with missing-input before anything runs", () =>
    scenario("fault", "driver", "missing input (no such object)", "exit 1, missing-input; nothing in the results; nothing left", async () => {
      const res = await runJson(["--config", copyConfig, "--subject", "sub-never-seeded"]);
      const result = await expectFailedCleanly(res, "sub-never-seeded", "missing-input");
      return `exit ${res.code}, ${result.reason}; results empty; 0 resources`;
    }));

  for (const [subject, phase, only] of [
    ["sub-kill-download", "mid-download", /\/abcd\/sub-kill-download\.tgz/],
    ["sub-kill-upload", "mid-upload", /\/outputs\//],
  ] as const) {
    it(`the agent killed ${phase} (SIGKILL, as a crash or the OOM killer would): the job fails, no result appears, nothing is left`, () =>
      scenario("fault", "agent killed", phase, "exit 1 (instance-lost); no marker of success; results empty; nothing left", async () => {
        const proxy: FaultProxy = await startFaultProxy(sandbox.moto.endpoint, { slowMs: 60_000 });
        try {
          proxy.set("slow", only);
          // Driver and agent reach S3 through the proxy; only the requests of the phase under attack hang.
          const running = runJson(
            ["--config", copyConfig, "--subject", subject, "--command", JSON.stringify(["sh", "-c", 'head -c 3000000 /dev/zero > "$2/big.bin"; cp "$1" "$2/"', "sh", "{input}", "{output}"])],
            { AWS_ENDPOINT_URL: proxy.endpoint },
          );
          const rec = await waitForRecord((r) => r.subject === subject && r.state === "running", `${subject} to run`);
          const deadline = Date.now() + 120_000;
          while (proxy.faults === 0 && Date.now() < deadline) await sleep(50);
          expect(proxy.faults, `a ${phase} request in flight`).to.be.greaterThan(0);
          process.kill(agentPid(rec), "SIGKILL");
          const res = await running;
          const result = await expectFailedCleanly(res, subject, "instance-lost");
          return `exit ${res.code}, ${result.reason}; results empty; 0 resources`;
        } finally {
          await proxy.close();
        }
      }));
  }

  it("a presigned URL that dies while the job runs fails with presigned-url-expired and the signature appears nowhere in the output", () =>
    scenario("fault", "driver", "presigned URL dead at the agent (its temporary credentials expired)", "exit 1, presigned-url-expired; no signature in stdout/stderr; nothing left", async () => {
      // A URL that says it lives for days passes the driver's expiry check; its signing session dying is what the
      // agent then meets (S3 answers ExpiredToken). An already expired URL is refused before launch (driver-inputs).
      const proxy: ExpiryProxy = await startExpiryProxy(sandbox.moto.endpoint, { tls: true, credentialsExpired: true });
      try {
        const signed = await getSignedUrl(sandbox.s3, new GetObjectCommand({ Bucket: sandbox.bucket, Key: "abcd/sub-presigned.tgz" }), { expiresIn: 6 * 24 * 3600 });
        const url = proxy.via(signed);
        const signature = new URL(url).searchParams.get("X-Amz-Signature")!;
        const input = JSON.stringify({ name: "t1", url, access: "presigned", extract: "tgz", select: "**/*_T1w.nii" });
        // The agent trusts the proxy's certificate the way a user's machine trusts S3's.
        const res = await runJson(["--config", copyConfig, "--subject", "sub-presigned", "--input", input], { NODE_EXTRA_CA_CERTS: proxy.caFile! });
        const result = await expectFailedCleanly(res, "sub-presigned", "presigned-url-expired");
        expect(res.stdout + res.stderr).to.not.include(signature);
        return `exit ${res.code}, ${result.reason}; signature not in output; 0 resources`;
      } finally {
        await proxy.close();
      }
    }));

  it("a missing image fails with image-pull-failed and leaves no container", () =>
    scenario("fault", "driver", "missing image (podman pull from the registry fails)", "exit 1, image-pull-failed; nothing left", async () => {
      const res = await runJson(["--config", copyConfig, "--subject", "sub-no-image", "--runtime", "podman", "--image", `${registry}/cloudcompute-test/no-such-image:1`]);
      const result = await expectFailedCleanly(res, "sub-no-image", "image-pull-failed");
      return `exit ${res.code}, ${result.reason}; 0 resources; no container`;
    }));

  it("a container whose process is killed with exit 137 (the OOM killer's signature) fails with container-failed, naming 137", () =>
    scenario("fault", "driver", "exit 137 in the container (podman)", "exit 1, container-failed naming 137; results empty; nothing left", async () => {
      const command = ["sh", "-c", 'cp "$1" "$2/"; sh -c "kill -9 \\$\\$"; exit $?', "sh", "{input}", "{output}"];
      const res = await runJson(["--config", copyConfig, "--subject", "sub-exit137", "--runtime", "podman", "--image", image, "--command", JSON.stringify(command)]);
      const result = await expectFailedCleanly(res, "sub-exit137", "container-failed");
      expect(result.message).to.match(/137/);
      return `exit ${res.code}, ${result.reason}: ${result.message.split("\n")[0]}`;
    }));

  it("a full disk (the job's work dir on a 4 MiB tmpfs) fails with out-of-disk", function () {
    if (process.getuid?.() !== 0) throw new Error("mounting a tmpfs needs root (CI runs as root)");
    return scenario("fault", "driver", "disk full (a 4 MiB tmpfs as the work dir)", "exit 1, out-of-disk; results empty; nothing left", async () => {
      const jobId = "job-disk-full";
      const dir = localDir(jobId);
      fs.mkdirSync(dir, { recursive: true });
      const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir], { encoding: "utf8" });
      expect(mounted.status, mounted.stderr).to.equal(0);
      try {
        const command = ["sh", "-c", 'cp "$1" "$2/" && head -c 16000000 /dev/zero > "$2/big.bin"', "sh", "{input}", "{output}"];
        const res = await runJson(["--config", copyConfig, "--subject", "sub-disk-full", "--job-id", jobId, "--command", JSON.stringify(command)]);
        const result = await expectFailedCleanly(res, "sub-disk-full", "out-of-disk");
        return `exit ${res.code}, ${result.reason}; results empty; 0 resources`;
      } finally {
        spawnSync("umount", ["-l", dir]);
      }
    });
  });

  it("code in the image has no network by default (podman): only the loopback interface exists, so it cannot send the data anywhere", () =>
    scenario("fault", "container isolation", "an image trying to reach the network (podman, default network)", "the container sees only lo; the job succeeds", async () => {
      const command = ["sh", "-c", 'cat /proc/net/dev > "$2/net.txt"; cp "$1" "$2/"', "sh", "{input}", "{output}"];
      const res = await runJson(["--config", copyConfig, "--subject", "sub-no-network", "--runtime", "podman", "--image", image, "--command", JSON.stringify(command)]);
      expect(res.code, res.stderr).to.equal(0);
      const net = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: "results/sub-no-network/net.txt" }))).Body!.transformToString();
      const interfaces = net.split("\n").slice(2).map((line) => line.split(":")[0].trim()).filter(Boolean);
      expect(interfaces).to.deep.equal(["lo"]);
      expectNothingLeft(JSON.parse(res.stdout).jobId);
      return `exit ${res.code}; interfaces in the container: ${interfaces.join(", ")}`;
    }));

  it("a host command (runtime none, local platform) cannot read the driver's AWS keys or the Pulumi passphrase", () =>
    scenario("secret", "runtime none (local)", "the job's environment", "no AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID or PULUMI_CONFIG_PASSPHRASE in the command's environment", async () => {
      const command = ["sh", "-c", 'env > "$2/env.txt"; cp "$1" "$2/"', "sh", "{input}", "{output}"];
      const res = await runJson(["--config", copyConfig, "--subject", "sub-env", "--command", JSON.stringify(command)]);
      expect(res.code, res.stderr).to.equal(0);
      const env = await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: "results/sub-env/env.txt" }))).Body!.transformToString();
      const names = env.split("\n").map((line) => line.split("=")[0]);
      for (const secret of ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "PULUMI_CONFIG_PASSPHRASE"]) expect(names, secret).to.not.include(secret);
      expect(env).to.not.include(SANDBOX_PASSPHRASE);
      return `exit ${res.code}; variables seen: ${names.filter(Boolean).sort().join(" ")}`;
    }));

  it("cleaning up a job's containers never touches another job's whose name only matches as a pattern ('.' in a job id)", async () => {
    const other = "cloudcompute-job-aXb-1-4242";
    const created = spawnSync("podman", ["create", "--tls-verify=false", "--name", other, image, "true"], { encoding: "utf8" });
    expect(created.status, created.stderr).to.equal(0);
    try {
      removeJobContainers("job-a.b-1");
      expect(containersOf("job-aXb-1"), "the other job's container").to.equal(other);
      removeJobContainers("job-aXb-1");
      expect(containersOf("job-aXb-1")).to.equal("");
    } finally {
      spawnSync("podman", ["rm", "-f", other]);
      spawnSync("podman", ["rmi", image]); // only the registry holds it, as the other suites expect
    }
  });

  it("a job past its max runtime (1 min) is stopped by the agent with max-runtime", () =>
    scenario("fault", "driver", "max runtime reached (1 minute, the command sleeps 10)", "exit 1, max-runtime; results empty; nothing left", async () => {
      const command = ["sh", "-c", 'cp "$1" "$2/"; sleep 600', "sh", "{input}", "{output}"];
      const res = await runJson(["--config", copyConfig, "--subject", "sub-max-runtime", "--max-runtime", "1", "--command", JSON.stringify(command)]);
      const result = await expectFailedCleanly(res, "sub-max-runtime", "max-runtime");
      return `exit ${res.code}, ${result.reason}; results empty; 0 resources`;
    }));

  it("SIGTERM as soon as the job's stack exists (before `up` has run): exit 130, nothing left", () =>
    scenario("fault", "driver signal", "SIGTERM before up", "exit 130; 0 resources, no agent process", async () => {
      let driver = 0;
      const running = sandbox.run(["--config", copyConfig, "--subject", "sub-term-before-up", "--json"], { onSpawn: (c) => (driver = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === "sub-term-before-up", "the job to be indexed");
      process.kill(driver, "SIGTERM");
      const res = await running;
      expect(res.code, res.stderr).to.equal(130);
      expect(JSON.parse(res.stdout).outcome).to.equal("interrupted");
      expectNothingLeft(rec.jobId);
      expect(await resultsOf("sub-term-before-up")).to.deep.equal([]);
      return `exit ${res.code}; ${sandbox.stackResources(rec.jobId)} resources`;
    }));

  it("SIGTERM during destroy: the destroy still completes and the job keeps its outcome", () =>
    scenario("fault", "driver signal", "SIGTERM during destroy", "the destroy completes: 0 resources; the job's own outcome reported", async () => {
      let driver = 0;
      const running = sandbox.run(["--config", copyConfig, "--subject", "sub-term-destroy", "--json"], { onSpawn: (c) => (driver = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === "sub-term-destroy" && r.state === "destroying", "the destroy to begin", 180_000);
      process.kill(driver, "SIGTERM");
      const res = await running;
      const result = JSON.parse(res.stdout) as JobResult;
      expect(result.outcome, res.stderr).to.equal("succeeded");
      expectNothingLeft(rec.jobId);
      expect(sandbox.records().find((r) => r.jobId === rec.jobId)?.state).to.equal("succeeded");
      return `exit ${res.code}, ${result.outcome}; ${sandbox.stackResources(rec.jobId)} resources`;
    }));

  it("the driver SIGKILLed during destroy: `cancel` finishes the cleanup", () =>
    scenario("fault", "driver signal", "SIGKILL during destroy, then cancel", "cancel exits 0; 0 resources, no pending operation, no lock, no process", async () => {
      let driver = 0;
      const running = sandbox.run(["--config", copyConfig, "--subject", "sub-kill-destroy", "--json"], { onSpawn: (c) => (driver = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === "sub-kill-destroy" && r.state === "destroying", "the destroy to begin", 180_000);
      process.kill(driver, "SIGKILL");
      await running;
      const cancel = await sandbox.run(["cancel", rec.jobId]);
      expect(cancel.code, cancel.stderr + cancel.stdout).to.equal(0);
      expectNothingLeft(rec.jobId);
      const locks = path.join(sandbox.home, "state", ".pulumi", "locks", "organization", "cloudcompute", rec.jobId);
      expect(fs.existsSync(locks) ? fs.readdirSync(locks).filter((f) => f.endsWith(".json")) : []).to.deep.equal([]);
      return `cancel exit ${cancel.code}; ${sandbox.stackResources(rec.jobId)} resources`;
    }));

  it("a job that finished on its own after its driver was killed is recorded with its own outcome by `cancel`, not as interrupted", () =>
    scenario("fault", "driver signal", "SIGKILL while waiting, the job then succeeds on its own, then cancel", "cancel exits 0; the record says succeeded (from this launch's marker); nothing left", async () => {
      let driver = 0;
      const running = sandbox.run(["--config", copyConfig, "--subject", "sub-finished-alone"], { onSpawn: (c) => (driver = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === "sub-finished-alone" && r.state === "running", "the job to run");
      process.kill(driver, "SIGKILL");
      await running;
      const deadline = Date.now() + 60_000;
      while ((await markerOf(rec.jobId))?.outcome !== "succeeded" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 300));
      const cancel = await sandbox.run(["cancel", rec.jobId]);
      expect(cancel.code, cancel.stderr + cancel.stdout).to.equal(0);
      const after = sandbox.records().find((r) => r.jobId === rec.jobId)!;
      expect(after.state).to.equal("succeeded");
      expectNothingLeft(rec.jobId);
      return `cancel exit ${cancel.code}; record ${after.state}`;
    }));

  it("an update cut off mid-create (a pending create the state never recorded): teardown finds the running agent and stops it", () =>
    scenario("fault", "driver", "pending create: the agent runs, the state holds only a pending create", "cancel stops the unrecorded agent (reported); 0 resources, no pending operation, no process", async () => {
      const command = ["sh", "-c", 'sleep 600; cp "$1" "$2/"', "sh", "{input}", "{output}"];
      let driver = 0;
      const running = sandbox.run(["--config", copyConfig, "--subject", "sub-pending-create", "--command", JSON.stringify(command)], { onSpawn: (c) => (driver = c.pid!) });
      const rec = await waitForRecord((r) => r.subject === "sub-pending-create" && r.state === "running", "the job to run");
      process.kill(driver, "SIGKILL");
      await running;
      // What an engine killed between starting the process and recording it leaves: the resource only as a pending create.
      const state = sandbox.pulumiJson(rec.jobId, ["stack", "export"]);
      const resources: Array<{ type: string; urn: string }> = state.deployment.resources;
      const agent = resources.find((r) => r.type === "pulumi-nodejs:dynamic:Resource")!;
      expect(agent, "the LocalProcess resource").to.exist;
      state.deployment.resources = resources.filter((r) => r !== agent && !r.urn.includes("LocalJob"));
      state.deployment.pending_operations = [{ resource: agent, type: "creating" }];
      const stateFile = path.join(sandbox.home, "pending-state.json");
      fs.writeFileSync(stateFile, JSON.stringify(state));
      const imported = spawnSync(pulumiBinary(), ["stack", "import", "--file", stateFile, "--stack", rec.jobId, "--force"], {
        cwd: path.join(sandbox.home, "work", rec.jobId),
        encoding: "utf8",
        env: { ...process.env, PULUMI_BACKEND_URL: pathToFileURL(path.join(sandbox.home, "state")).href, PULUMI_CONFIG_PASSPHRASE: SANDBOX_PASSPHRASE, PULUMI_SKIP_UPDATE_CHECK: "true" },
      });
      expect(imported.status, imported.stderr).to.equal(0);
      expect(processesIn(localDir(rec.jobId)).length, "the unrecorded agent and its job").to.be.at.least(1);

      const cancel = await sandbox.run(["cancel", rec.jobId]);
      expect(cancel.code, cancel.stderr + cancel.stdout).to.equal(0);
      expect(cancel.stdout + cancel.stderr).to.include(`local agent process ${agentPid(rec)}`);
      expectNothingLeft(rec.jobId);
      return `cancel exit ${cancel.code}; reclaimed local agent process; ${sandbox.stackResources(rec.jobId)} resources`;
    }));
});
