/**
 * One table of config keys (job/config-keys.ts): every key has a flag that really sets it, `--help` names every flag
 * and its key, and docs/configuration.md shows the table as the code has it.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ALL_KEYS, camelCase, CONFIG_KEYS, DEPLOY_KEYS } from "../job/config-keys";
import { resolveJob } from "../driver/options";
import { CONFIG_DOC, withCurrentTable } from "../scripts/config-reference";
import { CLI } from "../sandbox/driver-sandbox";

/** A flag value per key, and what the spec holds at the key's spec path when the flag is given. */
const SAMPLES: Record<string, { flag: unknown; spec: unknown }> = {
  "cloudcompute:subject": { flag: "sub-42", spec: "sub-42" },
  "cloudcompute:jobId": { flag: "job-from-flag", spec: "job-from-flag" },
  "cloudcompute:image": { flag: "busybox:1.36", spec: "busybox:1.36" },
  "cloudcompute:runtime": { flag: "podman", spec: "podman" },
  "cloudcompute:command": { flag: "run {input}", spec: ["run", "{input}"] },
  "cloudcompute:entrypoint": { flag: "/bin/sh", spec: "/bin/sh" },
  "cloudcompute:env": { flag: ["A=1"], spec: { A: "1" } },
  "cloudcompute:network": { flag: "bridge", spec: "bridge" },
  "cloudcompute:gpus": { flag: 1, spec: 1 },
  "cloudcompute:inputs": { flag: ["s3://flag-bucket/{subject}.nii"], spec: [{ name: "input", url: "s3://flag-bucket/sub-42.nii", access: "role", extract: "auto", allowMultiple: false }] },
  "cloudcompute:outputPrefix": { flag: "s3://flag-out/results", spec: "s3://flag-out/results" },
  "cloudcompute:outputGlobs": { flag: ["*.nii"], spec: ["*.nii"] },
  "cloudcompute:outputLayout": { flag: "bids", spec: "bids" },
  "cloudcompute:maxRuntimeMinutes": { flag: 33, spec: 33 },
  "cloudcompute:graceMinutes": { flag: 7, spec: 7 },
  "cloudcompute:heartbeatTimeoutSeconds": { flag: 99, spec: 99 },
  "cloudcompute:instanceType": { flag: "g5.xlarge", spec: "g5.xlarge" },
  "cloudcompute:spot": { flag: true, spec: true },
  "cloudcompute:ami": { flag: "ami-0123456789abcdef0", spec: "ami-0123456789abcdef0" },
  "cloudcompute:amiParameter": { flag: "/my/ami", spec: "/my/ami" },
  "cloudcompute:rootVolumeGiB": { flag: 80, spec: 80 },
  "cloudcompute:subnetId": { flag: "subnet-0123456789abcdef0", spec: "subnet-0123456789abcdef0" },
  "aws:region": { flag: "eu-west-1", spec: "eu-west-1" },
  "cloudcompute:labels": { flag: ["study=abcd"], spec: { study: "abcd" } },
};

const BASE_CONFIG = `config:
  cloudcompute:subject: NDARINV1A2B3C4D
  cloudcompute:image: neuronets/kwyk:latest-cpu
  cloudcompute:inputs: s3://bucket/{subject}.tgz
  cloudcompute:outputPrefix: s3://out/kwyk
  cloudcompute:instanceType: m5.4xlarge
  aws:region: us-east-1
`;

function valueAt(spec: unknown, specPath: readonly string[]): unknown {
  return specPath.reduce<unknown>((node, part) => (node as Record<string, unknown>)[part], spec);
}

describe("config keys: one table for the reader, the flags, --help and the reference", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-keys-"));
  const config = path.join(tmp, "Pulumi.keys.yaml");
  fs.writeFileSync(config, BASE_CONFIG);

  it("every job key's flag sets exactly that key in the spec (the ami flag alone: ami and amiParameter exclude each other)", () => {
    const missing = CONFIG_KEYS.filter((entry) => !(entry.key in SAMPLES)).map((entry) => entry.key);
    expect(missing, "keys without a sample in this test").to.deep.equal([]);
    for (const entry of CONFIG_KEYS) {
      const sample = SAMPLES[entry.key];
      const flags: Record<string, unknown> = { config, [camelCase(entry.flag.name)]: sample.flag };
      if (entry.key === "cloudcompute:inputs") flags.subject = "sub-42";
      if (entry.key === "cloudcompute:gpus") flags.instanceType = "g5.xlarge";
      const { spec } = resolveJob(flags);
      expect(valueAt(spec, entry.specPath), `--${entry.flag.name} → ${entry.key}`).to.deep.equal(sample.spec);
    }
  });

  it("the deployment keys' flags win over the file", () => {
    fs.writeFileSync(config, `${BASE_CONFIG}  cloudcompute:platform: aws\n  cloudcompute:backend: file:///from-file\n`);
    const job = resolveJob({ config, platform: "local", backend: "file:///from-flag", agentBundle: "bundle.js" });
    expect(job.platform).to.equal("local");
    expect(job.backend).to.equal("file:///from-flag");
    expect(job.agentBundlePath).to.equal(path.resolve("bundle.js"));
    expect(resolveJob({ config }).backend).to.equal("file:///from-file");
    fs.writeFileSync(config, BASE_CONFIG);
  });

  it("--help names every key's flag and the key it overrides", function () {
    this.timeout(30_000);
    const help = spawnSync(process.execPath, [CLI, "--help"], { encoding: "utf8" }).stdout.replace(/\s+/g, " ");
    for (const entry of ALL_KEYS) {
      expect(help, entry.key).to.include(`--${entry.flag.name} `);
      expect(help, entry.key).to.include(`[${entry.key}`);
    }
  });

  it("a flag the table does not have is refused, not ignored", function () {
    this.timeout(30_000);
    const res = spawnSync(process.execPath, [CLI, "--config", config, "--grace-minutes", "5", "--dry-run"], { encoding: "utf8" });
    expect(res.status).to.equal(2);
    expect(res.stderr).to.match(/Unknown arguments?: grace-minutes/i);
  });

  it("docs/configuration.md holds the table as job/config-keys.ts has it (npm run docs:config rewrites it)", () => {
    const doc = fs.readFileSync(CONFIG_DOC, "utf8");
    expect(withCurrentTable(doc) === doc, "docs/configuration.md is out of date: npm run docs:config").to.equal(true);
    for (const entry of ALL_KEYS) expect(doc).to.include(`| \`${entry.key}\` | \`--${entry.flag.name}\` |`);
  });

  it("deployment keys are known keys, so a config file may set them", () => {
    for (const entry of Object.values(DEPLOY_KEYS)) expect(ALL_KEYS.map((k) => k.key)).to.include(entry.key);
  });
});
