/**
 * The bundle as it runs on an instance: built by scripts/build-agent.js, started as `node agent.js --spec s3://...`
 * against moto + podman; plus the command building that the runtimes share.
 */
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { containerInvocation, isLoopbackRegistry } from "../agent/runtime-commands";
import { expandCommand } from "../job/command";
import { jobLayout } from "../job/layout";
import type { CompletionMarker } from "../job/records";
import { parseJobSpec, serialiseJobSpec } from "../job/spec";
import { getJson, makeAbcdArchive, newBucket, put, sharedMoto, testS3 } from "./support/fixtures";
import { startFakeImds } from "./support/imds";
import { scenario } from "./support/reliability";
import { podmanAvailable, podmanTestEnv } from "../sandbox/podman";

const execFileAsync = promisify(execFile);
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { buildAgent } = require("../scripts/build-agent.js") as {
  buildAgent(o: { outfile: string }): Promise<{ outfile: string; sha256: string; version: string }>;
};

describe("agent command building", () => {
  const values = {
    inputs: [
      { name: "t1", files: ["/data/inputs/t1/a.nii"] },
      { name: "t2", files: ["/data/inputs/t2/b.nii", "/data/inputs/t2/c.nii"] },
    ],
    output: "/data/outputs",
    subject: "NDARINVAAAA1111",
    jobId: "job-1",
  };
  it("fills placeholders; whole-argument input placeholders expand to one argument per file", () => {
    expect(expandCommand(["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"], values)).to.deep.equal([
      "-m",
      "bvwn_multi_prior",
      "/data/inputs/t1/a.nii",
      "/data/outputs/NDARINVAAAA1111",
    ]);
    expect(expandCommand(["{inputs}"], values)).to.have.length(3);
    expect(expandCommand(["{input.t2}", "--in={input.t2}", "{jobId}"], values)).to.deep.equal([
      "/data/inputs/t2/b.nii",
      "/data/inputs/t2/c.nii",
      "--in=/data/inputs/t2/b.nii",
      "job-1",
    ]);
  });
  it("passes GPUs the way each runtime wants and keeps env values out of argv", () => {
    const base = { image: "img", command: ["x"], workdir: "/data", name: "n", env: { TOKEN: "s3cret" }, gpus: 2 };
    const docker = containerInvocation({ ...base, runtime: "docker", envFile: "/run/x/container.env" });
    expect(docker.args.join(" ")).to.include("--gpus 2");
    expect(docker.args.join(" ")).to.not.include("s3cret");
    expect(docker.args.join(" ")).to.include("--env-file /run/x/container.env");
    // The values reach the container through the file, never the CLI's own environment.
    expect(docker.env.TOKEN).to.equal(undefined);
    const podman = containerInvocation({ ...base, runtime: "podman", envFile: "/run/x/container.env" });
    expect(podman.args.filter((a) => a.startsWith("nvidia.com/gpu="))).to.deep.equal(["nvidia.com/gpu=0", "nvidia.com/gpu=1"]);
    const apptainer = containerInvocation({ ...base, runtime: "apptainer" });
    expect(apptainer.args).to.include("--nv");
    expect(apptainer.env.APPTAINERENV_TOKEN).to.equal("s3cret");
  });
  it("gives the container no network unless the spec asks for bridge; apptainer is contained and drops privileges", () => {
    const base = { image: "img", command: ["x"], workdir: "/data", name: "n" };
    for (const runtime of ["docker", "podman"] as const) {
      const isolated = containerInvocation({ ...base, runtime }).args.join(" ");
      expect(isolated, runtime).to.include("--network none");
      expect(containerInvocation({ ...base, runtime, network: "bridge" }).args.join(" "), runtime).to.not.include("--network");
    }
    const apptainer = containerInvocation({ ...base, runtime: "apptainer" }).args;
    expect(apptainer).to.include.members(["--containall", "--cleanenv", "--no-privs"]);
    expect(apptainer.join(" ")).to.include("--net --network none");
    expect(containerInvocation({ ...base, runtime: "apptainer", network: "bridge" }).args).to.not.include("--net");
  });
  it("a host command (runtime none) gets the basics of the environment, never credentials or the Pulumi passphrase", () => {
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_SECRET_ACCESS_KEY: "agent-key", AWS_SESSION_TOKEN: "tok", PULUMI_CONFIG_PASSPHRASE: "pass", PATH: "/usr/bin:/bin" });
    try {
      const none = containerInvocation({ image: "none", command: ["sh"], workdir: "/w", name: "n", runtime: "none", env: { JOB_SETTING: "1" } });
      expect(none.env.PATH).to.equal("/usr/bin:/bin");
      expect(none.env.JOB_SETTING).to.equal("1");
      for (const name of ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PULUMI_CONFIG_PASSPHRASE"]) expect(none.env[name], name).to.equal(undefined);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });
  it("treats only loopback registries as plain-HTTP", () => {
    expect(isLoopbackRegistry("127.0.0.1:5000/x/y:1")).to.equal(true);
    expect(isLoopbackRegistry("localhost:5000/x")).to.equal(true);
    expect(isLoopbackRegistry("neuronets/kwyk:latest-cpu")).to.equal(false);
    expect(isLoopbackRegistry("ghcr.io/x/y")).to.equal(false);
  });
});

describe("agent bundle (dist/agent.js) end to end", function () {
  this.timeout(120_000);
  let dir: string;
  let bundle: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "cc-bundle-"));
    bundle = (await buildAgent({ outfile: path.join(dir, "agent.js") })).outfile;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("prints its usage with --help", async () => {
    const { stdout } = await execFileAsync(process.execPath, [bundle, "--help"]);
    expect(stdout).to.include("--spec");
    expect(stdout).to.include("--no-poweroff");
  });

  /** A bucket holding one synthetic ABCD archive, and an env reaching moto and podman. Skips the test without podman. */
  async function seededBucket(ctx: Mocha.Context, tag: string, subject: string) {
    if (!podmanAvailable()) {
      console.warn(`    podman is not installed: skipping "${ctx.test?.title}"`);
      ctx.skip();
    }
    const moto = await sharedMoto();
    const podman = await podmanTestEnv();
    const s3 = testS3();
    const bucket = await newBucket(s3, tag);
    const archive = await makeAbcdArchive(subject);
    await put(s3, bucket, `in/${archive.name}`, archive.tgz);
    return { s3, bucket, image: podman.registryImage, archiveUrl: `s3://${bucket}/in/${archive.name}`, env: { ...process.env, ...moto.env, ...podman.env } };
  }

  /** A podman job over input `url`, its spec written where the agent reads it; returns the spec and its S3 URL. */
  async function stagedSpec(seed: Awaited<ReturnType<typeof seededBucket>>, job: { jobId: string; subject: string; url: string; command: string[]; prefix: string; launchId?: string }) {
    const spec = parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: job.jobId,
      subject: job.subject,
      inputs: [{ name: "t1", url: job.url, select: "**/*_T1w.nii" }],
      container: { image: seed.image, runtime: "podman", command: job.command },
      outputs: { prefix: job.prefix },
      instance: { type: "m5.large", region: "us-east-1" },
      launchId: job.launchId,
    });
    const layout = jobLayout(spec);
    await put(seed.s3, seed.bucket, layout.spec.key, serialiseJobSpec(spec));
    return { spec, layout, specUrl: `s3://${seed.bucket}/${layout.spec.key}` };
  }

  /** Resolve once the job's container really runs. */
  async function waitForContainer(jobId: string, env: NodeJS.ProcessEnv): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { stdout } = await execFileAsync("podman", ["ps", "--filter", `name=cloudcompute-${jobId}`, "--format", "{{.Names}}"], { env });
      if (stdout.trim()) return;
      if (Date.now() > deadline) throw new Error("the container never started");
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  it("runs a job from a spec in S3, exits 0 with a success marker; a bad job exits 1 with a failure marker", async function () {
    const seed = await seededBucket(this, "cc-cli", "NDARINVCLI00001");
    const env = { ...seed.env, CLOUDCOMPUTE_POWEROFF: "1" };
    for (const [n, url, expectCode] of [
      [1, seed.archiveUrl, 0],
      [2, `s3://${seed.bucket}/in/missing.tgz`, 1],
    ] as const) {
      const { layout, specUrl } = await stagedSpec(seed, {
        jobId: `job-cli-${process.pid}-${n}`,
        subject: "NDARINVCLI00001",
        url,
        command: ["sh", "-c", 'wc -c "$0" > "$1/size.txt"', "{input}", "{output}"],
        prefix: `s3://${seed.bucket}/out-${n}`,
      });
      const workdir = path.join(dir, `work-${n}`);
      const code = await new Promise<number>((resolve) => {
        execFile(process.execPath, [bundle, "--spec", specUrl, "--workdir", workdir, "--no-poweroff"], { env }, (err) =>
          resolve(err ? ((err as { code?: number }).code ?? -1) : 0),
        );
      });
      const marker = await getJson<CompletionMarker>(seed.s3, seed.bucket, layout.marker.key);
      expect(code, marker.message).to.equal(expectCode);
      expect(marker.outcome).to.equal(expectCode === 0 ? "succeeded" : "failed");
      if (expectCode === 1) expect(marker.reason).to.equal("missing-input");
      else expect(marker.outputs.count).to.equal(1);
    }
  });

  for (const how of ["SIGTERM after the notice", "the notice alone"] as const) {
    it(`a spot interruption (${how}) is reported as spot-interrupted with this launch's ids, the container stopped`, async function () {
      const seed = await seededBucket(this, `cc-spot-${how.length}`, "NDARINVSPOT0001");
      await scenario("fault", "spot", `interruption: ${how}`, "marker spot-interrupted with this launch's ids; container stopped", async () => {
      const imdsServer = await startFakeImds();
      try {
        const env = { ...seed.env, CLOUDCOMPUTE_IMDS_ENDPOINT: imdsServer.endpoint, CLOUDCOMPUTE_SPOT_POLL_MS: "300" };
        const { spec, layout, specUrl } = await stagedSpec(seed, {
          jobId: `job-spot-${how.length}-${process.pid}`,
          subject: "NDARINVSPOT0001",
          url: seed.archiveUrl,
          command: ["sh", "-c", "echo started; sleep 300"],
          prefix: `s3://${seed.bucket}/out`,
          launchId: "launch-spot-test-1",
        });
        const child = execFile(process.execPath, [bundle, "--spec", specUrl, "--workdir", path.join(dir, `work-spot-${how.length}`), "--no-poweroff", "--status-interval", "1"], { env });
        const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
        await waitForContainer(spec.jobId, env);
        imdsServer.interrupt();
        if (how === "SIGTERM after the notice") child.kill("SIGTERM");
        expect(await exited).to.equal(1);
        const marker = await getJson<CompletionMarker>(seed.s3, seed.bucket, layout.marker.key);
        expect(marker).to.include({ outcome: "failed", reason: "spot-interrupted", phase: "run", launchId: "launch-spot-test-1", instanceId: imdsServer.instanceId });
        expect(marker.message).to.match(/interrupts this spot instance \(terminate at /);
        const { stdout } = await execFileAsync("podman", ["ps", "-a", "--filter", `name=cloudcompute-${spec.jobId}`, "--format", "{{.Names}}"], { env });
        expect(stdout.trim(), "container left behind").to.equal("");
        return `exit 1, marker ${marker.reason} (${marker.instanceId}); no container left`;
      } finally {
        await imdsServer.close();
      }
      });
    });
  }

  it("on SIGTERM without a spot notice (shutdown, cancel) kills the container, writes an internal-error marker and exits 1", async function () {
    const seed = await seededBucket(this, "cc-term", "NDARINVTERM0001");
    const { env } = seed;
    const { spec, layout, specUrl } = await stagedSpec(seed, {
      jobId: `job-term-${process.pid}`,
      subject: "NDARINVTERM0001",
      url: seed.archiveUrl,
      command: ["sh", "-c", "echo started; sleep 300"],
      prefix: `s3://${seed.bucket}/out`,
    });
    const child = execFile(process.execPath, [bundle, "--spec", specUrl, "--workdir", path.join(dir, "work-term"), "--no-poweroff", "--status-interval", "1"], { env });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    // Wait until the container is really running, then stop the agent the way a shutting-down machine does.
    await waitForContainer(spec.jobId, env);
    child.kill("SIGTERM");
    expect(await exited).to.equal(1);
    const marker = await getJson<CompletionMarker>(seed.s3, seed.bucket, layout.marker.key);
    expect(marker).to.include({ outcome: "failed", reason: "internal-error" });
    expect(marker.message).to.match(/SIGTERM/);
    const { stdout } = await execFileAsync("podman", ["ps", "-a", "--filter", `name=cloudcompute-${spec.jobId}`, "--format", "{{.Names}}"], { env });
    expect(stdout.trim(), "container left behind").to.equal("");
  });
});
