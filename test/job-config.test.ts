/**
 * Stack config to JobSpec: the Pulumi.dev.yaml example, how values are written, and errors that name the key.
 */
import { expect } from "chai";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { load } from "js-yaml";
import { CONFIG_KEYS } from "../job/config-keys";
import { ConfigError, configKeyFor, deployConfigFromConfig, specFromConfig } from "../job/config";

/** Config as Pulumi hands it to a program: strings as written, lists and maps as JSON text. */
function pulumiConfig(values: Record<string, unknown>): (key: string) => string | undefined {
  return (key) => {
    const value = values[key];
    if (value === undefined) return undefined;
    return typeof value === "string" ? value : JSON.stringify(value);
  };
}

function stackFile(file: string): Record<string, unknown> {
  const doc = load(readFileSync(path.join(__dirname, "..", file), "utf8")) as { config: Record<string, unknown> };
  return doc.config;
}

const MINIMAL = {
  "aws:region": "us-east-1",
  "cloudcompute:subject": "sub-01",
  "cloudcompute:image": "neuronets/kwyk:latest-cpu",
  "cloudcompute:inputs": "s3://openneuro.org/ds000001/sub-01/anat/sub-01_T1w.nii.gz",
  "cloudcompute:outputPrefix": "s3://lab-results-bucket/kwyk",
  "cloudcompute:instanceType": "m5.4xlarge",
};

/** The problems a config produces (fails the test when it is accepted). */
function problemsOf(values: Record<string, unknown>): string[] {
  try {
    specFromConfig(pulumiConfig(values));
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("the config was accepted");
}

describe("job/config: stack config to JobSpec", () => {
  it("reads Pulumi.dev.yaml into the seed's kwyk job", () => {
    const spec = specFromConfig(pulumiConfig({ ...stackFile("Pulumi.dev.yaml"), "cloudcompute:jobId": "dev" }));
    expect(spec.jobId).to.equal("dev");
    expect(spec.subject).to.equal("NDARINV1A2B3C4D");
    expect(spec.container).to.deep.include({ image: "neuronets/kwyk:latest-cpu", runtime: "docker", gpus: 0 });
    expect(spec.container.command).to.deep.equal(["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"]);
    expect(spec.instance).to.deep.include({ type: "m5.4xlarge", region: "us-east-1", spot: false });
    expect(spec.inputs).to.have.length(1);
    expect(spec.inputs[0]).to.deep.include({ name: "t1", access: "role", extract: "tgz", select: "**/*_T1w.nii" });
    expect(spec.inputs[0].url).to.match(/^s3:\/\/NDAR_Central_2\/submission_\d+\/NDARINV1A2B3C4D_baselineYear1Arm1_ABCD-MPROC-T1_\d+\.tgz$/);
    expect(spec.outputs.prefix).to.match(/^s3:\/\/[a-z0-9-]+\/kwyk$/);
    expect(spec.limits.maxRuntimeMinutes).to.equal(60);
    expect(spec.labels).to.deep.equal({ study: "abcd", pipeline: "kwyk" });
  });

  it("fills defaults and makes a time-sorted job id from the subject", () => {
    const spec = specFromConfig(pulumiConfig(MINIMAL), {}, new Date(Date.UTC(2026, 10, 25, 12, 0, 0, 7)));
    expect(spec.jobId).to.equal("job-sub-01-20261125T120000007Z");
    expect(spec.inputs).to.deep.equal([
      { name: "input", url: MINIMAL["cloudcompute:inputs"], access: "role", extract: "auto", allowMultiple: false },
    ]);
    expect(spec.container).to.deep.equal({ image: "neuronets/kwyk:latest-cpu", runtime: "docker", command: [], env: {}, gpus: 0, network: "none" });
    expect(spec.instance).to.deep.equal({ type: "m5.4xlarge", region: "us-east-1", spot: false, rootVolumeGiB: 50 });
    expect(spec.limits).to.deep.equal({ maxRuntimeMinutes: 240, graceMinutes: 10, heartbeatTimeoutSeconds: 300 });
    expect(spec.outputs.globs).to.deep.equal(["**"]);
  });

  it("accepts a command as one string, lists and maps as JSON, numbers and booleans as text", () => {
    const spec = specFromConfig(
      pulumiConfig({
        ...MINIMAL,
        "cloudcompute:command": "-m bvwn_multi_prior  {input} {output}/{subject}",
        "cloudcompute:env": { OMP_NUM_THREADS: 16, TF_CPP_MIN_LOG_LEVEL: "2" },
        "cloudcompute:inputs": ["s3://bucket-a/one.nii.gz", { name: "mask", url: "s3://bucket-a/mask.nii.gz", access: "public" }],
        "cloudcompute:outputGlobs": "**/*.nii.gz",
        "cloudcompute:gpus": "0",
        "cloudcompute:spot": "true",
        "cloudcompute:rootVolumeGiB": "120",
        "cloudcompute:subnetId": "subnet-0123456789abcdef0",
      }),
    );
    expect(spec.container.command).to.deep.equal(["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"]);
    expect(spec.container.env).to.deep.equal({ OMP_NUM_THREADS: "16", TF_CPP_MIN_LOG_LEVEL: "2" });
    expect(spec.inputs.map((i) => i.name)).to.deep.equal(["input1", "mask"]);
    expect(spec.outputs.globs).to.deep.equal(["**/*.nii.gz"]);
    expect(spec.instance).to.deep.include({ spot: true, rootVolumeGiB: 120, subnetId: "subnet-0123456789abcdef0" });
  });

  it("lets overrides (the driver's flags) win over config", () => {
    const spec = specFromConfig(pulumiConfig(MINIMAL), { "cloudcompute:subject": "NDAR_INVABCDEFGH", "cloudcompute:jobId": "job-x" });
    expect(spec.subject).to.equal("NDARINVABCDEFGH");
    expect(spec.jobId).to.equal("job-x");
  });

  describe("errors name the key and what is expected", () => {
    it("a bad instance type", () => {
      expect(problemsOf({ ...MINIMAL, "cloudcompute:instanceType": "huge" })).to.deep.equal([
        "cloudcompute:instanceType: expected an EC2 instance type such as m5.4xlarge",
      ]);
    });

    it("every missing required key at once", () => {
      expect(problemsOf({})).to.deep.equal([
        "cloudcompute:subject: required: expected a subject id such as NDARINVXXXXXXXX, NDAR_INVXXXXXXXX or sub-01",
        "cloudcompute:image: required: expected a container image reference such as neuronets/kwyk:latest-cpu",
        "cloudcompute:inputs: required: expected a list of inputs, each an S3 URL or an object {name, url, access, extract, select, allowMultiple, mount, sha256}",
        "cloudcompute:outputPrefix: required: expected an S3 prefix such as s3://my-lab-bucket/kwyk",
        "cloudcompute:instanceType: required: expected an EC2 instance type such as m5.4xlarge, or auto (driver only, with --time-budget)",
        "aws:region: required: expected an AWS region such as us-east-1",
      ]);
    });

    it("values of the wrong kind", () => {
      expect(
        problemsOf({ ...MINIMAL, "cloudcompute:gpus": "one", "cloudcompute:spot": "yes please", "cloudcompute:env": "[1", "cloudcompute:command": '["-m", 3]' }),
      ).to.deep.equal([
        'cloudcompute:command: not a list of strings: expected a list of arguments, or one string split on whitespace, e.g. -m bvwn_multi_prior {input} {output}/{subject}',
        "cloudcompute:env: not valid JSON (write it as a YAML list/map in the stack file, or as JSON): expected a map of environment variable names to values",
        'cloudcompute:gpus: got "one": expected a whole number of GPUs (0-16)',
        'cloudcompute:spot: got "yes please": expected true or false',
      ]);
    });

    it("schema errors map back to keys, including fields inside inputs", () => {
      const problems = problemsOf({
        ...MINIMAL,
        "aws:region": "Virginia",
        "cloudcompute:outputPrefix": "https://example.org/out",
        "cloudcompute:inputs": [{ name: "t1", url: "https://example.org/x.tgz" }],
        "cloudcompute:maxRuntimeMinutes": "0",
        "cloudcompute:runtime": "singularity",
        "cloudcompute:env": { "1BAD": "x" },
      });
      expect(problems).to.have.length(6);
      expect(problems).to.include.members([
        "aws:region: expected an AWS region such as us-east-1",
        "cloudcompute:outputPrefix: expected an S3 URL s3://bucket/key with a valid bucket name",
        'cloudcompute:inputs[0].url: an input with access "role" needs an s3:// URL (use access "presigned" for https)',
      ]);
      expect(problems.find((p) => p.startsWith("cloudcompute:maxRuntimeMinutes: "))).to.match(/>=\s*1/);
      expect(problems.find((p) => p.startsWith("cloudcompute:runtime: "))).to.contain("docker");
      // zod reports a bad record key as "Invalid key in record"; the key path still names the variable.
      expect(problems.find((p) => p.startsWith("cloudcompute:env"))).to.match(/^cloudcompute:env\.1BAD: Invalid key/);
    });

    it("a malformed NDA subject", () => {
      const problems = problemsOf({ ...MINIMAL, "cloudcompute:subject": "NDAR_INV12" });
      expect(problems).to.have.length(1);
      expect(problems[0]).to.match(/^cloudcompute:subject: subject "NDAR_INV12" looks like an NDA GUID but is malformed/);
    });

    it("ami and amiParameter together", () => {
      expect(
        problemsOf({ ...MINIMAL, "cloudcompute:ami": "ami-0123456789abcdef0", "cloudcompute:amiParameter": "/my/param" }),
      ).to.deep.equal(["cloudcompute:ami: give either ami or amiParameter, not both"]);
    });

    it("an unknown placeholder in the command", () => {
      expect(problemsOf({ ...MINIMAL, "cloudcompute:command": "{input} {out}" })[0]).to.match(/^cloudcompute:command: unknown placeholder\(s\) \{out\}/);
    });

    it("a bad platform", () => {
      expect(() => deployConfigFromConfig(pulumiConfig({ "cloudcompute:platform": "gcp" }))).to.throw(/cloudcompute:platform: got "gcp": expected aws or local/);
      expect(deployConfigFromConfig(pulumiConfig({}))).to.deep.equal({ platform: "aws", agentBundlePath: undefined });
    });
  });

  it("maps every spec path a key sets back to that key", () => {
    for (const entry of CONFIG_KEYS) expect(configKeyFor(entry.specPath)).to.equal(entry.key);
    expect(configKeyFor(["inputs", 1, "select"])).to.equal("cloudcompute:inputs[1].select");
    expect(configKeyFor(["labels", "study"])).to.equal("cloudcompute:labels.study");
  });
});
