/**
 * `pulumi up` by hand, for real: the Pulumi CLI and its Node.js language host run index.ts from a project directory
 * (Pulumi.yaml, index.ts and the sources), with `cloudcompute:platform: local` and moto as S3. A config typo is
 * refused before any resource exists; `{subject}` in the input URL is filled in as the driver fills it; the job runs
 * to its success marker; a second `pulumi up` is a new launch that runs again and keeps its own spec; `pulumi
 * destroy` empties the stack and `pulumi stack history` tells the story.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import { dump as toYaml, load as fromYaml } from "js-yaml";
import { DriverSandbox, pulumiBinary, REPO_ROOT, SANDBOX_PASSPHRASE, startDriverSandbox } from "../sandbox/driver-sandbox";
import { t1wPath } from "./support/fixtures";

const STACK = "job-by-hand";
const SUBJECT = "sub-byhand";

describe("pulumi up of index.ts (real CLI and Node.js language host, local platform, moto)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let project: string;
  let env: NodeJS.ProcessEnv;

  const pulumi = (args: string[]) => {
    const res = spawnSync(pulumiBinary(), [...args, "--stack", STACK, "--non-interactive"], { cwd: project, env, encoding: "utf8", timeout: 5 * 60_000 });
    return { code: res.status, out: `${res.stdout}\n${res.stderr}` };
  };
  const pulumiJson = (args: string[]) => {
    const res = spawnSync(pulumiBinary(), [...args, "--stack", STACK], { cwd: project, env, encoding: "utf8" });
    if (res.status !== 0) throw new Error(`pulumi ${args.join(" ")} failed: ${res.stderr}`);
    return JSON.parse(res.stdout);
  };
  const stackFile = () => path.join(project, `Pulumi.${STACK}.yaml`);
  const writeConfig = (config: Record<string, unknown>) => {
    const current = (fromYaml(fs.readFileSync(stackFile(), "utf8")) ?? {}) as Record<string, unknown>;
    fs.writeFileSync(stackFile(), toYaml({ ...current, config }));
  };
  const marker = async (): Promise<{ outcome: string; launchId: string } | undefined> => {
    const key = `results/_cloudcompute/${STACK}/marker.json`;
    const res = await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: key })).catch(() => undefined);
    return res ? JSON.parse(await res.Body!.transformToString()) : undefined;
  };
  const waitForMarker = async (launchId: string) => {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const found = await marker();
      if (found?.launchId === launchId) return found;
      if (Date.now() > deadline) throw new Error(`no marker of launch ${launchId} within 2 minutes (last: ${JSON.stringify(found)})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const launchIdOutput = () => {
    const res = spawnSync(pulumiBinary(), ["stack", "output", "launchId", "--stack", STACK], { cwd: project, env, encoding: "utf8" });
    return res.stdout.trim();
  };

  const goodConfig = () => ({
    "aws:region": "us-east-1",
    "cloudcompute:platform": "local",
    "cloudcompute:agentBundle": sandbox.agentBundle,
    "cloudcompute:subject": SUBJECT,
    "cloudcompute:image": "none",
    "cloudcompute:runtime": "none",
    "cloudcompute:command": ["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"],
    "cloudcompute:inputs": [{ name: "t1", url: `s3://${sandbox.bucket}/abcd/{subject}.tgz`, select: "**/*_T1w.nii" }],
    "cloudcompute:outputPrefix": `s3://${sandbox.bucket}/results`,
    "cloudcompute:instanceType": "m5.large",
  });

  before(async function () {
    const bin = path.dirname(pulumiBinary());
    const languageHost = [bin, ...(process.env.PATH ?? "").split(path.delimiter)].some((dir) => fs.existsSync(path.join(dir, "pulumi-language-nodejs")));
    if (!languageHost) {
      // scripts/pulumi-cli.sh builds it when ../shared/pulumi-language-nodejs exists; an installed Pulumi ships it.
      console.warn("    no pulumi-language-nodejs next to the Pulumi CLI or on PATH: `pulumi up` of index.ts cannot run here");
      this.skip();
    }
    sandbox = await startDriverSandbox();
    await sandbox.seed([SUBJECT]);
    // A project directory of its own, so the stack's config file is not written into the repository.
    project = fs.mkdtempSync(path.join(sandbox.home, "project-"));
    for (const file of ["Pulumi.yaml", "index.ts", "tsconfig.json", "package.json"]) fs.copyFileSync(path.join(REPO_ROOT, file), path.join(project, file));
    for (const dir of ["job", "common", "infra", "driver", "agent", "node_modules"]) fs.symlinkSync(path.join(REPO_ROOT, dir), path.join(project, dir));
    env = {
      ...process.env,
      ...sandbox.env,
      PATH: `${bin}${path.delimiter}${process.env.PATH}`,
      PULUMI_HOME: path.join(sandbox.home, "pulumi-home"),
      PULUMI_BACKEND_URL: pathToFileURL(path.join(sandbox.home, "state")).href,
      PULUMI_CONFIG_PASSPHRASE: SANDBOX_PASSPHRASE,
      PULUMI_SKIP_UPDATE_CHECK: "true",
      NODE_PATH: path.join(REPO_ROOT, "node_modules"),
    };
    fs.mkdirSync(path.join(sandbox.home, "state"), { recursive: true });
    const init = pulumi(["stack", "init", "--secrets-provider", "passphrase"]);
    expect(init.code, init.out).to.equal(0);
  });
  after(async () => {
    await sandbox?.stop();
  });

  it("refuses a mistyped key before anything exists, with the key it probably meant and no stack trace", () => {
    writeConfig({ ...goodConfig(), "cloudcompute:maxRuntimeMinute": "60" });
    const up = pulumi(["up", "--yes", "--skip-preview"]);
    expect(up.code, up.out).to.not.equal(0);
    expect(up.out).to.include("cloudcompute:maxRuntimeMinute: no such key (did you mean cloudcompute:maxRuntimeMinutes?)");
    expect(up.out, "a stack trace").to.not.match(/\n\s+at .*\(.*\.ts:\d+:\d+\)/);
    // Only the stack's own root entry: no job resource was declared.
    const resources = (pulumiJson(["stack", "export"]).deployment.resources ?? []) as Array<{ type: string }>;
    expect(resources.map((r) => r.type).filter((t) => t !== "pulumi:pulumi:Stack")).to.deep.equal([]);
  });

  it("runs the job to its success marker, with {subject} in the input URL filled in", async () => {
    writeConfig(goodConfig());
    const up = pulumi(["up", "--yes", "--skip-preview"]);
    expect(up.code, up.out).to.equal(0);
    const launchId = launchIdOutput();
    expect(launchId).to.match(/^[0-9a-f-]{36}$/);
    const done = await waitForMarker(launchId);
    expect(done.outcome).to.equal("succeeded");
    const results = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: `results/${SUBJECT}/` }));
    expect((results.Contents ?? []).map((o) => o.Key)).to.deep.equal([`results/${SUBJECT}/${path.basename(t1wPath(SUBJECT))}`]);
  });

  it("a second pulumi up is a new launch: it runs again, and the replaced launch's cleanup keeps the new spec", async () => {
    const first = launchIdOutput();
    const up = pulumi(["up", "--yes", "--skip-preview"]);
    expect(up.code, up.out).to.equal(0);
    const second = launchIdOutput();
    expect(second).to.not.equal(first);
    const done = await waitForMarker(second);
    expect(done.outcome).to.equal("succeeded");
    const spec = await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: `results/_cloudcompute/${STACK}/spec.json` }));
    expect(JSON.parse(await spec.Body!.transformToString()).launchId, "the staged spec after the old staging's delete").to.equal(second);
  });

  it("the README's steps after up: the marker read with the AWS CLI from the markerUrl output, then refresh", function () {
    const markerUrl = spawnSync(pulumiBinary(), ["stack", "output", "markerUrl", "--stack", STACK], { cwd: project, env, encoding: "utf8" }).stdout.trim();
    expect(markerUrl).to.equal(`s3://${sandbox.bucket}/results/_cloudcompute/${STACK}/marker.json`);
    // --endpoint-url: Debian's AWS CLI 2.9 predates the AWS_ENDPOINT_URL variable that points it at moto.
    const aws = spawnSync("aws", ["s3", "cp", markerUrl, "-", "--endpoint-url", String(env.AWS_ENDPOINT_URL)], { env, encoding: "utf8" });
    if (aws.error) this.skip(); // no AWS CLI here (setup installs it)
    expect(aws.status, aws.stderr).to.equal(0);
    expect(JSON.parse(aws.stdout).outcome).to.equal("succeeded");
    const refresh = pulumi(["refresh", "--yes", "--skip-preview"]);
    expect(refresh.code, refresh.out).to.equal(0);
  });

  it("refuses while another driver holds the subject's run lease, naming it; the running launch stays", async () => {
    const before = launchIdOutput();
    const now = new Date();
    const lease = { apiVersion: "cloudcompute/v1", kind: "subject-lease", subject: SUBJECT, leaseId: "other", periodSeconds: 300, holder: { user: "frank", host: "lab-ws4", pid: 99, jobId: "job-other" }, since: now.toISOString(), renewedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString() };
    const key = `results/_cloudcompute/subjects/${SUBJECT}/lease.json`;
    await sandbox.s3.send(new PutObjectCommand({ Bucket: sandbox.bucket, Key: key, Body: JSON.stringify(lease) }));
    const up = pulumi(["up", "--yes", "--skip-preview"]);
    expect(up.code, up.out).to.not.equal(0);
    expect(up.out).to.include(`subject ${SUBJECT} is being run by frank@lab-ws4 (pid 99, job job-other) since ${lease.since}`);
    expect(launchIdOutput(), "launch after a refused up").to.equal(before);
    await sandbox.s3.send(new DeleteObjectCommand({ Bucket: sandbox.bucket, Key: key }));
  });

  it("pulumi destroy empties the stack, deletes the staged spec, and the history shows every update", async () => {
    const destroy = pulumi(["destroy", "--yes", "--skip-preview"]);
    expect(destroy.code, destroy.out).to.equal(0);
    expect(pulumiJson(["stack", "export"]).deployment.resources ?? []).to.have.length(0);
    const gone = await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: `results/_cloudcompute/${STACK}/spec.json` })).then(() => false, () => true);
    expect(gone, "spec.json after destroy").to.equal(true);
    const history = pulumiJson(["stack", "history", "--json"]) as Array<{ kind: string; result: string }>;
    expect(history.map((h) => `${h.kind}:${h.result}`)).to.include.members(["update:succeeded", "destroy:succeeded"]);
    expect(history.filter((h) => h.kind === "update" && h.result === "succeeded")).to.have.length(2);
    expect(history.filter((h) => h.kind === "update" && h.result === "failed").length, "the refused up").to.be.at.least(1);
  });
});
