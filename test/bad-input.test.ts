/**
 * Bad input through the real CLI: every malformed value is refused with exit 2 and a message naming the field or flag,
 * before anything exists — no stack in the backend, no job record, no object in S3. Flags are checked whether or not
 * the mode they belong to is in use. Each case is a row of docs/RELIABILITY.md.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { scenario } from "./support/reliability";

const SUBJECT = "NDARINV0000AAAA";
const json = (value: unknown) => JSON.stringify(value);

/** [what is wrong, extra CLI arguments, what the message must say] */
const CASES: Array<[string, string[], RegExp]> = [
  ["a malformed NDA GUID", ["--subject", "NDAR_INVbad"], /cloudcompute:subject: subject "NDAR_INVbad"/],
  ["an empty subject", ["--subject", ""], /--subject is empty/],
  ["a subject with a path in it", ["--subject", "../etc"], /cloudcompute:subject/],
  ["an output prefix that is not S3", ["--output", "https://example.com/x"], /cloudcompute:outputPrefix/],
  ["an output bucket name too short", ["--output", "s3://a/x"], /cloudcompute:outputPrefix/],
  ["an output prefix with a wildcard", ["--output", "s3://cc-study/x*"], /cloudcompute:outputPrefix: .*wildcards/],
  ["an input URL naming no object", ["--input", "s3://cc-study"], /cloudcompute:inputs\[0\]\.url/],
  ["an https input without presigned access", ["--input", json({ name: "t1", url: "https://host/b/x.tgz" })], /inputs\[0\]\.url: .*needs an s3:\/\/ URL/],
  ["an input that is not JSON", ["--input", "{bad json"], /JSON/],
  ["an input name in capitals", ["--input", json({ name: "T1", url: "s3://cc-study/a.tgz" })], /inputs\[0\]\.name/],
  ["an input mount that is neither selected nor all", ["--input", json({ name: "t1", url: "s3://cc-study/a.zip", select: "*.nii", mount: "some" })], /inputs\[0\]\.mount/],
  ["a presigned file name decoding to '../'", ["--input", json({ name: "t1", url: "https://h/b/..%2Fx.nii?X-Amz-Signature=abc", access: "presigned", extract: "none" })], /inputs\[0\]\.url: .*file name/],
  ["a sha256 that is not one", ["--input", json({ name: "t1", url: "s3://cc-study/a.tgz", sha256: "xyz" })], /inputs\[0\]\.sha256/],
  ["an unknown input field", ["--input", json({ name: "t1", url: "s3://cc-study/a.tgz", bogus: 1 })], /bogus/],
  ["an instance type without a size", ["--instance-type", "m5"], /cloudcompute:instanceType/],
  ["an instance type in capitals", ["--instance-type", "M5.LARGE"], /cloudcompute:instanceType/],
  ["a region that does not exist", ["--region", "moon-1"], /aws:region|region/],
  ["an unknown container runtime", ["--runtime", "lxc"], /runtime.*lxc|Invalid values/s],
  ["an empty image", ["--image", ""], /--image is empty/],
  ["an unknown command placeholder", ["--command", "{output} {nope}"], /unknown placeholder\(s\) \{nope\}/],
  ["a command list with a number", ["--command", json(["-m", 3])], /cloudcompute:command/],
  ["an empty output glob", ["--output-glob", ""], /--output-glob is empty/],
  ["an env name that is no variable of the environment", ["--env", "CC_NOT_IN_THE_ENVIRONMENT"], /--env CC_NOT_IN_THE_ENVIRONMENT: no such variable in the environment/],
  ["an env pair without a name", ["--env", "=value"], /--env "=value": expected NAME=VALUE/],
  ["an env name starting with a digit", ["--env", "1BAD=x"], /cloudcompute:env/],
  ["an env value with a line break", ["--env", "A=line1\nline2"], /line breaks/],
  ["a reserved label name", ["--label", "aws:team=x"], /reserved tag name/],
  ["a label value with ';'", ["--label", "study=a;b"], /label value may hold only/],
  ["a fractional GPU count", ["--gpus", "1.5"], /cloudcompute:gpus/],
  ["too many GPUs", ["--gpus", "99"], /cloudcompute:gpus/],
  ["a root volume under 8 GiB", ["--root-volume", "4"], /cloudcompute:rootVolumeGiB/],
  ["a max runtime of 0", ["--max-runtime", "0"], /cloudcompute:maxRuntimeMinutes/],
  ["a heartbeat timeout of 5 s", ["--heartbeat-timeout", "5"], /cloudcompute:heartbeatTimeoutSeconds/],
  ["negative retries", ["--retries", "-1"], /--retries -1: expected a whole number/],
  ["retries that are not a number", ["--retries", "abc"], /--retries "abc": expected a whole number/],
  ["concurrency 0 without a batch", ["--concurrency", "0"], /--concurrency 0: expected a whole number/],
  ["a max runtime that is not a number, written --flag=value", ["--max-runtime=ten"], /--max-runtime "ten": expected a number/],
  ["a price that is not a number", ["--price-per-hour", "abc"], /--price-per-hour "abc": expected USD per hour/],
  ["a subjects file that does not exist", ["--subjects-file", "/nonexistent/subjects.txt"], /subjects file \/nonexistent\/subjects\.txt/],
  ["a subject given twice", ["--subject", "NDARINV0000BBBB", "--subject", "NDARINV0000CCCC"], /--subject is given 2 times/],
  ["an unknown platform", ["--platform", "gcp"], /platform.*gcp|Invalid values/s],
  ["runtime none on aws (the command would run as root beside the agent)", ["--platform", "aws", "--runtime", "none"], /cloudcompute:runtime: "none" runs the command on the instance itself/],
  ["an unknown container network", ["--network", "host"], /network.*host|Invalid values/s],
  ["apptainer with the bridge network on aws (the job could reach the instance role)", ["--platform", "aws", "--runtime", "apptainer", "--network", "bridge"], /cloudcompute:network: "bridge" with apptainer shares the instance's network/],
  ["an unknown flag", ["--no-such-flag"], /Unknown argument/],
  ["the reserved job id 'agent'", ["--job-id", "agent"], /jobId: .*reserved/],
  ["a job id that is no stack name", ["--job-id", "bad id!"], /cloudcompute:jobId|jobId/],
  ["an agent bundle that does not exist", ["--agent-bundle", "/nonexistent/agent.js"], /agent bundle/],
  ["an empty entrypoint", ["--entrypoint", ""], /--entrypoint is empty/],
  ["a mistyped flag", ["--grca", "5"], /Unknown argument: grca \(--grca: did you mean --grace\?\)/],
  ["an input URL naming another subject's GUID (a config written for one subject)", ["--input", "s3://cc-study/abcd/NDARINV9999ZZZZ_baselineYear1Arm1_ABCD-MPROC-T1_20170101000000.tgz"], /cloudcompute:inputs: the url names subject NDARINV9999ZZZZ, but this job's subject is NDARINV0000AAAA/],
  ["a GPU on an instance type without one (aws)", ["--platform", "aws", "--runtime", "docker", "--gpus", "1", "--instance-type", "m5.large"], /cloudcompute:gpus: .*m5\.large has no GPU/],
  ["an s3:// input with access presigned and no --input-profile to sign it", ["--input", json({ name: "t1", url: "s3://cc-study/a.tgz", access: "presigned" })], /cloudcompute:inputs\[0\]: s3:\/\/cc-study\/a\.tgz with access "presigned" is signed by the driver: give --input-profile NAME/],
  ["an expired presigned URL", ["--input", json({ name: "t1", url: "https://h.s3.amazonaws.com/b/x.nii?X-Amz-Date=20200101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=abc", access: "presigned", extract: "none" })], /input "t1": the presigned URL expires at 2020-01-01T01:00:00\.000Z \(already expired\)/],
  ["a presigned URL living less than the job needs", ["--max-runtime", "600", "--input", json({ name: "t1", url: `https://h.s3.amazonaws.com/b/x.nii?X-Amz-Date=${new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "")}&X-Amz-Expires=7200&X-Amz-Signature=abc`, access: "presigned", extract: "none" })], /expires at .* \(in 1[12]\d min\), but the job may need it until .*max runtime 600.*get a fresh URL, or give a shorter --max-runtime \(at most \d+\)/],
  ["--all-subjects together with --subject", ["--all-subjects", "--manifest", "m.txt", "--subject", "NDARINV0000AAAA"], /give either --subject or --all-subjects, not both/],
  ["--subject-inputs outside a batch worker", ["--subject-inputs", "{}"], /--subject-inputs is for batch workers/],
  ["a subjects file whose input column names no input", ["--subjects-file", "@bad-columns.csv"], /line 2: no input named "t2" in the config/],
  ["a manifest no input uses (the config's inputs name their own URLs)", ["--manifest", "@fmriresults01.txt"], /cloudcompute:inputs: the manifest .*fmriresults01\.txt .* fills no input: give the input it fills the url "\{manifest\}"/],
  ["a manifest that does not exist", ["--manifest", "/nonexistent/fmriresults01.txt"], /cloudcompute:manifest: \/nonexistent\/fmriresults01\.txt cannot be read/],
];

describe("bad input is refused before anything exists (real CLI)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;

  before(async () => {
    sandbox = await startDriverSandbox();
    config = sandbox.writeConfig("bad-input.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }));
    // Files the cases name with "@NAME" (in the sandbox's home).
    fs.copyFileSync(path.join(__dirname, "fixtures", "fmriresults01.txt"), path.join(sandbox.home, "fmriresults01.txt"));
    fs.writeFileSync(path.join(sandbox.home, "bad-columns.csv"), "subject,input.t2\nNDARINV0000AAAA,s3://cc-study/x.tgz\n");
  });
  after(async () => {
    await sandbox?.stop();
  });

  for (const [what, args, message] of CASES) {
    it(`refuses ${what}: exit 2, naming it`, async () => {
      await scenario("bad input", "cli", what, `exit 2, message matching ${message}, no stack, no record, no S3 object`, async () => {
        // The case's own --subject (or --subjects-file) replaces the default one.
        const subject = args.includes("--subject") || args.includes("--subjects-file") ? [] : ["--subject", SUBJECT];
        const res = await sandbox.run(["--config", config, ...subject, ...args.map((arg) => (arg.startsWith("@") ? path.join(sandbox.home, arg.slice(1)) : arg))]);
        expect(res.code, res.stderr).to.equal(2);
        expect(res.stderr).to.match(message);
        const stacks = path.join(sandbox.home, "state", ".pulumi", "stacks");
        expect(fs.existsSync(stacks) ? fs.readdirSync(stacks, { recursive: true }).filter((f) => String(f).endsWith(".json")) : []).to.deep.equal([]);
        expect(sandbox.records()).to.deep.equal([]);
        const objects = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket }));
        expect(objects.KeyCount ?? 0).to.equal(0);
        return `exit ${res.code}: ${res.stderr.trim().split("\n").find((l) => l.startsWith("error:")) ?? res.stderr.trim().split("\n")[0]}`;
      });
    });
  }

  it("an aws job without the AWS provider plugin (offline here) fails before anything exists, with the exact install command", async function () {
    const pulumiHome = path.join(sandbox.home, "empty-pulumi-home"); // no plugins at all, whatever this machine has
    const res = await sandbox.run(["--config", config, "--subject", SUBJECT, "--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu"], {
      extraEnv: { PULUMI_HOME: pulumiHome },
    });
    if (!/is not installed/.test(res.stderr)) this.skip(); // a machine that could download the plugin: nothing to show
    expect(res.code, res.stderr).to.equal(3);
    expect(res.stderr).to.match(/the Pulumi aws provider 7\.48\.0, which aws jobs need, is not installed .*Nothing was created/s);
    expect(res.stderr).to.match(/\n  \/\S*pulumi plugin install resource aws 7\.48\.0/);
    const stacks = path.join(sandbox.home, "state", ".pulumi", "stacks");
    expect(fs.existsSync(stacks) ? fs.readdirSync(stacks, { recursive: true }).filter((f) => String(f).endsWith(".json")) : []).to.deep.equal([]);
    expect(sandbox.records()).to.deep.equal([]);
  });

  it("has at least 30 cases", () => {
    expect(CASES.length).to.be.at.least(30);
  });
});
