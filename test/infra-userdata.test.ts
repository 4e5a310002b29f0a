/**
 * The bootstrap user-data: rendered for CPU, GPU and spot jobs and checked statically (size, `bash -n`, shellcheck,
 * no secrets), then run for real against a moto S3 with the real AWS CLI and Node: only the machine-level commands
 * (systemd, dnf, docker, nvidia-smi) are stand-ins that record their calls.
 */
import { expect } from "chai";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { withAgent } from "../infra";
import {
  BOOT_ALLOWANCE_MINUTES,
  BOOTSTRAP_PLACEHOLDERS,
  bootstrapVariables,
  encodeUserData,
  renderUserData,
  shellQuote,
  USER_DATA_LIMIT_BYTES,
  INSTANCE_HOST,
} from "../infra/userdata";
import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { parseAgentStatus, parseCompletionMarker, type CompletionMarker } from "../job/records";
import type { JobSpec } from "../job/spec";
import { kwykSpec, PRESIGNED_URL } from "./support/job-specs";
import { MotoServer, startMoto } from "../sandbox/moto";

const scratch = mkdtempSync(path.join(tmpdir(), "cc-userdata-test-"));
const BUNDLE = { path: "/unused", sha256: "0".repeat(64) };

function staged(spec: JobSpec, sha256 = BUNDLE.sha256): JobSpec {
  return withAgent(spec, { ...BUNDLE, sha256 });
}

const JOBS: Record<string, JobSpec> = {
  cpu: staged(kwykSpec()),
  gpu: staged(kwykSpec({ container: { image: "neuronets/kwyk:latest-gpu", gpus: 1 }, instance: { type: "g5.xlarge" } })),
  spot: staged(kwykSpec({ instance: { spot: true, type: "c6g.4xlarge" } })),
};

function scriptFile(name: string, text: string): string {
  const file = path.join(scratch, `${name}.sh`);
  writeFileSync(file, text);
  return file;
}

describe("infra: user-data rendering", () => {
  for (const [kind, spec] of Object.entries(JOBS)) {
    describe(`${kind} job`, () => {
      const script = renderUserData(spec);

      it("stays under EC2's 16 KB limit and is sent as plain text", () => {
        expect(Buffer.byteLength(script)).to.be.below(USER_DATA_LIMIT_BYTES);
        expect(encodeUserData(script)).to.deep.equal({ userData: script });
      });

      it("parses with bash -n", () => {
        const result = spawnSync("bash", ["-n", scriptFile(`${kind}-syntax`, script)], { encoding: "utf8" });
        expect(result.stderr).to.equal("");
        expect(result.status).to.equal(0);
      });

      it("passes shellcheck", () => {
        const result = spawnSync("shellcheck", ["--severity=style", scriptFile(`${kind}-lint`, script)], { encoding: "utf8" });
        expect(result.stdout + result.stderr).to.equal("");
        expect(result.status).to.equal(0);
      });

      it("arms the watchdog for max runtime + grace and logs to the console and a file", () => {
        expect(script).to.contain(`WATCHDOG_MINUTES='${BOOT_ALLOWANCE_MINUTES + spec.limits.maxRuntimeMinutes + spec.limits.graceMinutes}'`);
        expect(script).to.contain("LOG_FILE='/var/log/cloudcompute.log'");
        expect(script).to.contain("CONSOLE='/dev/console'");
        expect(script).to.contain(`GPUS='${spec.container.gpus}'`);
      });

      it("carries no credential, spec content or presigned URL", () => {
        expect(script).not.to.match(/AKIA|ASIA|aws_secret|AWS_SECRET|AWS_SESSION_TOKEN|X-Amz-/i);
        expect(script).not.to.contain(spec.inputs[0].url);
        expect(script).not.to.contain(spec.container.image);
      });
    });
  }

  it("keeps a presigned input's URL out of user-data entirely", () => {
    const spec = staged(kwykSpec({ inputs: [{ name: "t1", url: PRESIGNED_URL, access: "presigned", extract: "tgz" }] }));
    const script = renderUserData(spec);
    expect(script).not.to.contain("nda-central");
    expect(script).not.to.contain("X-Amz-Signature");
    expect(script).not.to.contain("deadbeefcafe");
  });

  it("quotes values so that no value can run code", () => {
    const hostile = `a'b"c$(touch ${scratch}/pwned)\`id\`\\d`;
    const out = execFileSync("bash", ["-c", `X=${shellQuote(hostile)}; printf '%s' "$X"`], { encoding: "utf8" });
    expect(out).to.equal(hostile);
    expect(existsSync(path.join(scratch, "pwned"))).to.equal(false);
  });

  it("a hostile output prefix stays data in the rendered script", () => {
    const spec = staged(kwykSpec({ outputs: { prefix: `s3://lab-results-bucket/x'$(touch ${scratch}/pwned2)"` } }));
    const script = renderUserData(spec);
    const header = script.split("\n").filter((line) => /^[A-Z0-9_]+=/.test(line)).join("\n");
    const out = execFileSync("bash", ["-c", `${header}\nprintf '%s' "$BOOTSTRAP_FAILED_MARKER"`], { encoding: "utf8" });
    expect(JSON.parse(out).outputs.prefix).to.equal(formatS3Url(jobLayout(spec).results));
    expect(existsSync(path.join(scratch, "pwned2"))).to.equal(false);
  });

  it("the records the script writes, once filled in, are valid markers and status (job/records schemas)", () => {
    const spec = JOBS.cpu;
    const fill = (template: string) =>
      template
        .replaceAll(BOOTSTRAP_PLACEHOLDERS.now, "2026-11-25T10:00:00Z")
        .replaceAll(BOOTSTRAP_PLACEHOLDERS.message, "bootstrap step failed: install packages (exit code 1)")
        .replaceAll(BOOTSTRAP_PLACEHOLDERS.instanceId, "i-0123456789abcdef0");
    const vars = bootstrapVariables(spec);
    for (const name of ["BOOTSTRAP_FAILED_MARKER", "AGENT_CRASHED_MARKER"]) {
      const marker = parseCompletionMarker(JSON.parse(fill(vars[name])));
      expect(marker, name).to.not.equal(undefined);
      expect(marker!.outcome, name).to.equal("failed");
      expect(marker!.launchId, name).to.equal(spec.launchId);
      expect(marker!.instanceId, name).to.equal("i-0123456789abcdef0");
    }
    expect(parseCompletionMarker(JSON.parse(fill(vars.BOOTSTRAP_FAILED_MARKER)))!.reason).to.equal("bootstrap-failed");
    expect(parseCompletionMarker(JSON.parse(fill(vars.AGENT_CRASHED_MARKER)))!.reason).to.equal("internal-error");
    const status = parseAgentStatus(JSON.parse(fill(vars.BOOTING_STATUS)));
    expect(status?.booting).to.equal(true);
    expect(status?.phase).to.equal("starting");
  });

  it("gzips and base64-encodes user-data over 16 KB, losslessly", () => {
    const big = "#!/bin/bash\n" + "echo 'cloudcompute padding line'\n".repeat(1000);
    expect(Buffer.byteLength(big)).to.be.above(USER_DATA_LIMIT_BYTES);
    const encoded = encodeUserData(big);
    expect(encoded.userData).to.equal(undefined);
    expect(gunzipSync(Buffer.from(encoded.userDataBase64!, "base64")).toString("utf8")).to.equal(big);
  });

  it("refuses user-data that is too large even gzipped", () => {
    const noise = createHash("sha512");
    let text = "";
    for (let i = 0; text.length < 40_000; i++) text += noise.copy().update(String(i)).digest("base64");
    expect(() => encodeUserData(text)).to.throw(/even gzipped/);
  });
});

/** Stand-ins for machine-level commands: they record how they were called. */
const RECORDER = `#!/bin/bash
echo "$(basename "$0") $*" >> "$CC_TEST_CALLS"
if [ "$(basename "$0")" = dnf ]; then exit "\${CC_TEST_DNF_EXIT:-0}"; fi
exit 0
`;
const STAND_INS = ["systemd-run", "systemctl", "shutdown", "poweroff", "dnf", "docker", "nvidia-smi"];
/** IMDSv2 as curl sees it: a token for the PUT, the instance id for the GET (CC_TEST_INSTANCE_ID; none: unreachable). */
const IMDS_CURL = `#!/bin/bash
[ -n "\${CC_TEST_INSTANCE_ID:-}" ] || exit 7
case "$*" in
  *api/token*) echo token ;;
  *instance-id*) echo "$CC_TEST_INSTANCE_ID" ;;
  *) exit 22 ;;
esac
`;
/** Real tools the script uses; PATH holds only these and the stand-ins, so nothing on this machine leaks in. */
const REAL_TOOLS = ["date", "tr", "tee", "grep", "sleep", "install", "sha256sum", "cat", "basename", "mkdir", "rm", "env", "uname", "dirname", "readlink", "ls"];

describe("infra: user-data run against moto S3 (real AWS CLI and Node)", function () {
  this.timeout(120_000);
  const BUCKET = "lab-results-bucket";
  let moto: MotoServer;
  let s3: S3Client;
  let bin: string;

  const AGENT_SOURCE = `
const fs = require("node:fs");
fs.writeFileSync(process.env.CC_TEST_AGENT_ARGS, JSON.stringify(process.argv.slice(2)));
process.exit(Number(process.env.CC_TEST_AGENT_EXIT || 0));
`;
  const AGENT_SHA = createHash("sha256").update(AGENT_SOURCE).digest("hex");

  before(async function () {
    if (!existsSync("/usr/bin/aws")) this.skip();
    moto = await startMoto();
    s3 = new S3Client({ endpoint: moto.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    bin = path.join(scratch, "bin");
    mkdirSync(bin);
    for (const name of STAND_INS) {
      writeFileSync(path.join(bin, name), RECORDER);
      chmodSync(path.join(bin, name), 0o755);
    }
    writeFileSync(path.join(bin, "curl"), IMDS_CURL);
    chmodSync(path.join(bin, "curl"), 0o755);
    // The Debian AWS CLI ignores AWS_ENDPOINT_URL: the wrapper passes the endpoint as a flag.
    writeFileSync(path.join(bin, "aws"), `#!/bin/bash\nexec /usr/bin/aws --endpoint-url "$CC_TEST_ENDPOINT" "$@"\n`);
    chmodSync(path.join(bin, "aws"), 0o755);
    symlinkSync(process.execPath, path.join(bin, "node"));
    for (const tool of REAL_TOOLS) {
      const real = execFileSync("bash", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
      symlinkSync(real, path.join(bin, tool));
    }
  });

  after(async () => {
    await moto?.stop();
  });

  interface Run {
    calls: string[];
    agentArgs?: string[];
    status: number | null;
    log: string;
  }

  let runCount = 0;
  async function runBootstrap(spec: JobSpec, env: Record<string, string> = {}, agentSource = AGENT_SOURCE): Promise<Run> {
    const dir = path.join(scratch, `run-${++runCount}`);
    mkdirSync(dir);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: jobLayout(spec).spec.key, Body: JSON.stringify(spec) }));
    const agentKey = spec.agent!.url.replace(`s3://${BUCKET}/`, "");
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: agentKey, Body: agentSource }));
    const script = renderUserData(spec, {
      logFile: path.join(dir, "cloudcompute.log"),
      agentDir: path.join(dir, "agent"),
      console: "/dev/null",
      retrySeconds: 0,
    });
    const calls = path.join(dir, "calls");
    writeFileSync(calls, "");
    const result = spawnSync("/bin/bash", [scriptFile(`run-${runCount}`, script)], {
      encoding: "utf8",
      timeout: 90_000,
      env: {
        PATH: bin,
        HOME: dir,
        ...moto.env,
        CC_TEST_ENDPOINT: moto.endpoint,
        CC_TEST_CALLS: calls,
        CC_TEST_AGENT_ARGS: path.join(dir, "agent-args.json"),
        ...env,
      },
    });
    if (!existsSync(path.join(dir, "cloudcompute.log"))) throw new Error(`bootstrap left no log: ${result.status} ${result.error ?? ""} ${result.stderr}`);
    const argsFile = path.join(dir, "agent-args.json");
    return {
      calls: readFileSync(calls, "utf8").trim().split("\n").filter(Boolean),
      agentArgs: existsSync(argsFile) ? JSON.parse(readFileSync(argsFile, "utf8")) : undefined,
      status: result.status,
      log: readFileSync(path.join(dir, "cloudcompute.log"), "utf8"),
    };
  }

  async function readObject(key: string): Promise<string | undefined> {
    try {
      const response = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return await response.Body!.transformToString();
    } catch (err) {
      if ((err as { name?: string }).name === "NoSuchKey") return undefined;
      throw err;
    }
  }

  function jobFor(jobId: string, changes: Parameters<typeof kwykSpec>[0] = {}, sha = AGENT_SHA): JobSpec {
    return { ...staged(kwykSpec({ jobId, outputs: { prefix: `s3://${BUCKET}/kwyk` }, ...changes }), sha), launchId: `launch-${jobId}` };
  }

  it("success: watchdog first, Docker started, agent run with the spec URL, status written, no marker, power off", async () => {
    const spec = jobFor("job-ok");
    const run = await runBootstrap(spec);
    expect(run.status, run.log).to.equal(0);
    expect(run.calls[0]).to.equal(
      `systemd-run --unit=cloudcompute-watchdog --on-active=265min --timer-property=AccuracySec=1s /usr/bin/systemctl poweroff --force`,
    );
    expect(run.calls).to.include("systemctl enable --now docker");
    expect(run.calls).to.include("docker info");
    expect(run.calls.some((c) => c.startsWith("dnf"))).to.equal(false); // node, aws and docker are present
    expect(run.calls.some((c) => c.startsWith("nvidia-smi"))).to.equal(false);
    expect(run.agentArgs).to.deep.equal(["--spec", formatS3Url(jobLayout(spec).spec), "--no-poweroff"]);
    expect(run.calls[run.calls.length - 1]).to.equal("systemctl poweroff");
    const status = JSON.parse((await readObject(jobLayout(spec).status.key))!);
    expect(status).to.include({ jobId: "job-ok", launchId: "launch-job-ok", phase: "starting", booting: true, instanceId: "" });
    expect(Date.parse(status.updatedAt)).to.be.a("number").and.not.NaN;
    expect(await readObject(jobLayout(spec).marker.key)).to.equal(undefined);
  });

  it("GPU job: checks the GPUs before fetching the agent", async () => {
    const run = await runBootstrap(jobFor("job-gpu", { container: { gpus: 1 }, instance: { type: "g5.xlarge" } }));
    expect(run.status, run.log).to.equal(0);
    expect(run.calls).to.include("nvidia-smi -L");
  });

  it("a failed package install writes a bootstrap-failed marker and the log, retries, and powers off", async () => {
    const spec = jobFor("job-dnf", { container: { runtime: "podman" } });
    const run = await runBootstrap(spec, { CC_TEST_DNF_EXIT: "1" });
    expect(run.status).to.equal(1);
    expect(run.calls.filter((c) => c === "dnf install -y -q podman")).to.have.length(3);
    expect(run.agentArgs).to.equal(undefined);
    const marker: CompletionMarker = JSON.parse((await readObject(jobLayout(spec).marker.key))!);
    expect(marker).to.include({ jobId: "job-dnf", subject: "NDARINV1A2B3C4D", outcome: "failed", reason: "bootstrap-failed", phase: "bootstrap" });
    expect(marker.message).to.equal("bootstrap step failed: install packages (exit code 1)");
    expect(Date.parse(marker.finishedAt)).to.not.be.NaN;
    expect(marker.outputs).to.deep.equal({ prefix: `s3://${BUCKET}/kwyk/NDARINV1A2B3C4D/`, count: 0, bytes: 0, partial: false });
    const log = await readObject(`kwyk/_cloudcompute/job-dnf/bootstrap.log`);
    expect(log).to.contain("bootstrap failed during: install packages");
    expect(run.calls[run.calls.length - 1]).to.equal("systemctl poweroff");
  });

  it("an agent bundle that does not match its sha256 is never run", async () => {
    const spec = jobFor("job-tampered", {}, "f".repeat(64));
    const run = await runBootstrap(spec);
    expect(run.status).to.equal(1);
    expect(run.agentArgs).to.equal(undefined);
    const marker: CompletionMarker = JSON.parse((await readObject(jobLayout(spec).marker.key))!);
    expect(marker).to.include({ reason: "bootstrap-failed", phase: "bootstrap" });
    expect(marker.message).to.contain("verify agent bundle");
  });

  it("an agent that dies without a marker gets an internal-error marker", async () => {
    const spec = jobFor("job-crash");
    const run = await runBootstrap(spec, { CC_TEST_AGENT_EXIT: "3" });
    expect(run.agentArgs).to.have.length(3);
    const marker: CompletionMarker = JSON.parse((await readObject(jobLayout(spec).marker.key))!);
    expect(marker).to.include({ outcome: "failed", reason: "internal-error" });
    expect(marker).not.to.have.property("phase");
    expect(marker.message).to.equal("the agent exited with code 3 without writing a completion marker");
    expect(run.calls[run.calls.length - 1]).to.equal("systemctl poweroff");
  });

  it("a marker left by an earlier launch under the same job id does not stop the crash marker of this one", async () => {
    const spec = jobFor("job-reused");
    const old = JSON.stringify({ apiVersion: "cloudcompute/v1", jobId: "job-reused", launchId: "launch-earlier", outcome: "succeeded" }, null, 2);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: jobLayout(spec).marker.key, Body: old }));
    const run = await runBootstrap(spec, { CC_TEST_AGENT_EXIT: "3", CC_TEST_INSTANCE_ID: "i-0123456789abcdef0" });
    expect(run.agentArgs).to.have.length(3);
    const marker: CompletionMarker = JSON.parse((await readObject(jobLayout(spec).marker.key))!);
    expect(marker).to.include({ outcome: "failed", reason: "internal-error", launchId: "launch-job-reused", instanceId: "i-0123456789abcdef0" });
  });

  it("an agent's own failure marker is left as it wrote it", async () => {
    const spec = jobFor("job-failed");
    const own = JSON.stringify({ launchId: spec.launchId, outcome: "failed", reason: "container-failed", written: "by the agent" }, null, 2);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: jobLayout(spec).marker.key, Body: own }));
    const run = await runBootstrap(spec, { CC_TEST_AGENT_EXIT: "1" });
    expect(run.agentArgs).to.have.length(3);
    expect(await readObject(jobLayout(spec).marker.key)).to.equal(own);
  });

  it("uses the instance defaults for real jobs", () => {
    expect(INSTANCE_HOST).to.deep.equal({ logFile: "/var/log/cloudcompute.log", agentDir: "/opt/cloudcompute", console: "/dev/console", retrySeconds: 5 });
  });
});
