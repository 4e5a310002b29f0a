/**
 * The declared AWS resources of one job, through Pulumi's mocks: every security property of issue 2 is asserted on
 * what `declareJob` actually declares.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { load } from "js-yaml";
import * as pulumi from "@pulumi/pulumi";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { declareJob, JobOutputs, stagingArgs, withAgent } from "../infra";
import { planAwsJob, jobTags } from "../infra/aws";
import { chooseMachineImage, instanceArchitecture, instanceHasGpu } from "../infra/ami";
import { iamLiteral, jobPolicyDocument, partitionOf } from "../infra/policy";
import { stagingInputs } from "../infra/staging";
import type { JobSpec } from "../job/spec";
import {
  CUSTOM_VPC_ID,
  DEFAULT_SUBNETS,
  DEFAULT_VPC_ID,
  installMocks,
  isSecret,
  MOCK_AMIS,
  MOCK_STACK,
  recorded,
  valueOf,
} from "./support/pulumi-mocks";
import { kwykSpec, PRESIGNED_URL } from "./support/job-specs";
import { CreateBucketCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { sharedMoto, testS3 } from "./support/fixtures";

const ROLE = "aws:iam/role:Role";
const ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy";
const PROFILE = "aws:iam/instanceProfile:InstanceProfile";
const SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup";
const INSTANCE = "aws:ec2/instance:Instance";
const DYNAMIC = "pulumi-nodejs:dynamic:Resource";
const SSM_PARAMETER = "aws:ssm/getParameter:getParameter";

const bundleDir = mkdtempSync(path.join(tmpdir(), "cc-infra-test-"));
const BUNDLE_PATH = path.join(bundleDir, "agent.js");
writeFileSync(BUNDLE_PATH, "console.log('agent');\n");
const BUNDLE_SHA = createHash("sha256").update("console.log('agent');\n").digest("hex");
const AGENT_KEY = `kwyk/_cloudcompute/agent/agent-${BUNDLE_SHA}.js`;

/** Declare a job and wait until every resource is registered. */
async function declare(spec: JobSpec): Promise<JobOutputs> {
  recorded.reset();
  const outputs = declareJob(spec, { platform: "aws", agentBundlePath: BUNDLE_PATH, profilePropagationSeconds: 0 });
  await Promise.all([valueOf(outputs.instanceId), valueOf(outputs.specUrl), valueOf(outputs.roleArn)]);
  return outputs;
}

describe("infra: the AWS resources of a job (mocked Pulumi)", () => {
  before(installMocks);

  describe("kwyk CPU job on m5.4xlarge", () => {
    let outputs: JobOutputs;
    before(async () => {
      outputs = await declare(kwykSpec());
    });

    it("declares exactly role, policy, profile, propagation wait, staging, security group and instance", () => {
      const types = recorded.resources.map((r) => r.type).sort();
      expect(types).to.deep.equal(
        [
          "cloudcompute:job:AwsJob",
          DYNAMIC,
          DYNAMIC,
          INSTANCE,
          PROFILE,
          ROLE,
          ROLE_POLICY,
          SECURITY_GROUP,
        ].sort(),
      );
    });

    it("trusts only ec2.amazonaws.com to assume the role", () => {
      const trust = JSON.parse(recorded.one(ROLE).inputs.assumeRolePolicy);
      expect(trust.Statement).to.deep.equal([
        { Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" },
      ]);
    });

    it("allows GetObject on exactly the input, the job's control objects and the agent bundle", () => {
      const policy = JSON.parse(recorded.one(ROLE_POLICY).inputs.policy);
      expect(policy.Statement).to.deep.equal([
        {
          Sid: "ReadJobInputsControlAndAgent",
          Effect: "Allow",
          Action: ["s3:GetObject"],
          Resource: [
            "arn:aws:s3:::NDAR_Central_2/submission_14921/NDARINV1A2B3C4D_baselineYear1Arm1_ABCD-MPROC-T1_20170711184237.tgz",
            `arn:aws:s3:::lab-results-bucket/kwyk/_cloudcompute/${MOCK_STACK}/*`,
            `arn:aws:s3:::lab-results-bucket/${AGENT_KEY}`,
            "arn:aws:s3:::lab-results-bucket/kwyk/_cloudcompute/subjects/NDARINV1A2B3C4D/results.json",
          ],
        },
        {
          Sid: "WriteJobResultsAndControl",
          Effect: "Allow",
          Action: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
          Resource: [
            "arn:aws:s3:::lab-results-bucket/kwyk/NDARINV1A2B3C4D/*",
            `arn:aws:s3:::lab-results-bucket/kwyk/_cloudcompute/${MOCK_STACK}/*`,
            "arn:aws:s3:::lab-results-bucket/kwyk/_cloudcompute/subjects/NDARINV1A2B3C4D/results.json",
          ],
        },
        {
          Sid: "RemoveStaleResults",
          Effect: "Allow",
          Action: ["s3:DeleteObject"],
          Resource: ["arn:aws:s3:::lab-results-bucket/kwyk/NDARINV1A2B3C4D/*"],
        },
      ]);
    });

    it("grants no bucket-wide, List, wildcard-action or non-S3 permission", () => {
      const policy = JSON.parse(recorded.one(ROLE_POLICY).inputs.policy);
      for (const statement of policy.Statement) {
        expect(statement.Effect).to.equal("Allow");
        for (const action of statement.Action) {
          expect(action).to.match(/^s3:[A-Za-z]+$/);
          expect(action).not.to.match(/^s3:List(Bucket|AllMyBuckets|Objects)/);
        }
        for (const resource of statement.Resource) {
          // arn:aws:s3:::bucket/key... — never a bare bucket, never a wildcard in the bucket part.
          expect(resource).to.match(/^arn:aws:s3:::[A-Za-z0-9._-]+\/[^*]+/);
        }
      }
      expect(recorded.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")).to.have.length(0);
      expect(recorded.one(ROLE).inputs).not.to.have.property("managedPolicyArns");
    });

    it("gives the instance the profile of that role, after the propagation wait", () => {
      const profile = recorded.one(PROFILE);
      expect(profile.inputs.role).to.equal(recorded.one(ROLE).id);
      const wait = recorded.ofType(DYNAMIC).find((r) => r.name.endsWith("profile-propagation"));
      expect(wait?.inputs.profileName).to.equal(profile.id);
      expect(recorded.one(INSTANCE).inputs.iamInstanceProfile).to.equal(profile.id);
    });

    it("opens no inbound port and only TCP 443 and 80 outbound", () => {
      const sg = recorded.one(SECURITY_GROUP).inputs;
      expect(sg.ingress).to.deep.equal([]);
      expect(sg.egress.map((rule: any) => [rule.protocol, rule.fromPort, rule.toPort])).to.deep.equal([
        ["tcp", 443, 443],
        ["tcp", 80, 80],
      ]);
      expect(sg.vpcId).to.equal(DEFAULT_VPC_ID);
      expect(recorded.ofType("aws:ec2/securityGroupRule:SecurityGroupRule")).to.have.length(0);
      expect(recorded.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")).to.have.length(0);
      expect(recorded.one(INSTANCE).inputs.vpcSecurityGroupIds).to.deep.equal(["sg-0123456789abcdef0"]);
    });

    it("has no key pair, terminates on shutdown and requires IMDSv2 with hop limit 1 (containers cannot reach the role)", () => {
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance).not.to.have.property("keyName");
      expect(recorded.ofType("aws:ec2/keyPair:KeyPair")).to.have.length(0);
      expect(instance.instanceInitiatedShutdownBehavior).to.equal("terminate");
      expect(instance.metadataOptions).to.deep.equal({
        httpEndpoint: "enabled",
        httpTokens: "required",
        httpPutResponseHopLimit: 1,
        instanceMetadataTags: "disabled",
      });
    });

    it("has an encrypted gp3 root volume of the configured size, deleted with the instance", () => {
      expect(recorded.one(INSTANCE).inputs.rootBlockDevice).to.deep.equal({
        volumeType: "gp3",
        volumeSize: 50,
        encrypted: true,
        deleteOnTermination: true,
      });
    });

    it("runs on demand from the AL2023 x86_64 AMI resolved from SSM", () => {
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance).not.to.have.property("instanceMarketOptions");
      expect(instance.instanceType).to.equal("m5.4xlarge");
      expect(recorded.invokesOf(SSM_PARAMETER).map((c) => c.inputs.name)).to.deep.equal([
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
      ]);
      expect(instance.ami).to.equal(MOCK_AMIS["/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"]);
    });

    it("lands in a default subnet of the default VPC offering the type, with a public IP", () => {
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance.subnetId).to.equal(DEFAULT_SUBNETS["us-east-1a"]);
      expect(instance.associatePublicIpAddress).to.equal(true);
      const subnetQuery = recorded.invokesOf("aws:ec2/getSubnets:getSubnets")[0].inputs.filters;
      expect(subnetQuery).to.deep.include({ name: "vpc-id", values: [DEFAULT_VPC_ID] });
      expect(subnetQuery).to.deep.include({ name: "default-for-az", values: ["true"] });
    });

    it("tags the instance and its volumes with job, subject and stack", () => {
      const instance = recorded.one(INSTANCE).inputs;
      const expected = {
        "cloudcompute:job": MOCK_STACK,
        "cloudcompute:subject": "NDARINV1A2B3C4D",
        "cloudcompute:stack": MOCK_STACK,
        Name: `cloudcompute-${MOCK_STACK}`,
      };
      expect(instance.tags).to.deep.equal(expected);
      expect(instance.volumeTags).to.deep.equal(expected);
      for (const type of [ROLE, PROFILE, SECURITY_GROUP]) expect(recorded.one(type).inputs.tags).to.deep.equal(expected);
    });

    it("replaces the instance when user-data changes, and sends plain user-data that starts the agent", () => {
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance.userDataReplaceOnChange).to.equal(true);
      expect(instance.userData).to.match(/^#!\/bin\/bash\n/);
      expect(instance.userData).to.contain(`--spec "$SPEC_URL"`);
      expect(instance).not.to.have.property("userDataBase64");
    });

    it("places the instance and its security group in the job's region", () => {
      expect(recorded.one(INSTANCE).inputs.region).to.equal("us-east-1");
      expect(recorded.one(SECURITY_GROUP).inputs.region).to.equal("us-east-1");
    });

    it("stages spec.json and the content-addressed agent bundle under the job's prefix", async () => {
      const staging = recorded.ofType(DYNAMIC).find((r) => r.name === "staging")!;
      expect(staging.inputs.specBucket).to.equal("lab-results-bucket");
      expect(staging.inputs.specKey).to.equal(`kwyk/_cloudcompute/${MOCK_STACK}/spec.json`);
      expect(staging.inputs.agentKey).to.equal(AGENT_KEY);
      expect(staging.inputs.agentSha256).to.equal(BUNDLE_SHA);
      const staged = JSON.parse(staging.inputs.specJson);
      expect(staged.agent).to.deep.equal({ url: `s3://lab-results-bucket/${AGENT_KEY}`, sha256: BUNDLE_SHA });
      expect(await valueOf(outputs.specUrl)).to.equal(`s3://lab-results-bucket/kwyk/_cloudcompute/${MOCK_STACK}/spec.json`);
    });

    it("exports instance id, role ARN, marker URL and region", async () => {
      expect(await valueOf(outputs.instanceId)).to.equal("i-0123456789abcdef0");
      expect(await valueOf(outputs.roleArn)).to.match(/^arn:aws:iam::\d{12}:role\//);
      expect(await valueOf(outputs.markerUrl)).to.equal(`s3://lab-results-bucket/kwyk/_cloudcompute/${MOCK_STACK}/marker.json`);
      expect(await valueOf(outputs.region)).to.equal("us-east-1");
    });
  });

  describe("variants", () => {
    it("spot: one-time request, terminated on interruption, no max price", async () => {
      await declare(kwykSpec({ instance: { spot: true } }));
      expect(recorded.one(INSTANCE).inputs.instanceMarketOptions).to.deep.equal({
        marketType: "spot",
        spotOptions: { spotInstanceType: "one-time", instanceInterruptionBehavior: "terminate" },
      });
    });

    it("GPU: Deep Learning Base AMI and at least 75 GiB root", async () => {
      await declare(kwykSpec({ container: { image: "neuronets/kwyk:latest-gpu", gpus: 1 }, instance: { type: "g5.xlarge" } }));
      const parameter = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";
      expect(recorded.invokesOf(SSM_PARAMETER).map((c) => c.inputs.name)).to.deep.equal([parameter]);
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance.ami).to.equal(MOCK_AMIS[parameter]);
      expect(instance.rootBlockDevice.volumeSize).to.equal(75);
      expect(instance.userData).to.contain("GPUS='1'");
    });

    it("Graviton: the arm64 AL2023 parameter; zones that lack the type are skipped", async () => {
      await declare(kwykSpec({ instance: { type: "m7g.2xlarge" } }));
      expect(recorded.invokesOf(SSM_PARAMETER)[0].inputs.name).to.equal(
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
      );
      const zones = recorded.invokesOf("aws:ec2/getSubnets:getSubnets")[0].inputs.filters.find(
        (f: any) => f.name === "availability-zone",
      ).values;
      expect(zones).to.deep.equal(["us-east-1a", "us-east-1b"]);
    });

    it("an explicit AMI is used as given, without an SSM lookup", async () => {
      await declare(kwykSpec({ instance: { ami: "ami-0123456789abcdef0" } }));
      expect(recorded.invokesOf(SSM_PARAMETER)).to.have.length(0);
      expect(recorded.one(INSTANCE).inputs.ami).to.equal("ami-0123456789abcdef0");
    });

    it("an explicit subnet: its VPC for the security group, no forced public IP", async () => {
      await declare(kwykSpec({ instance: { subnetId: "subnet-0123456789abcdef0" } }));
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance.subnetId).to.equal("subnet-0123456789abcdef0");
      expect(instance).not.to.have.property("associatePublicIpAddress");
      expect(recorded.one(SECURITY_GROUP).inputs.vpcId).to.equal(CUSTOM_VPC_ID);
      expect(recorded.invokesOf("aws:ec2/getVpc:getVpc")).to.have.length(0);
    });

    it("labels become tags next to the job's own", async () => {
      await declare(kwykSpec({ labels: { study: "abcd" } }));
      expect(recorded.one(INSTANCE).inputs.tags).to.include({ study: "abcd", "cloudcompute:job": MOCK_STACK });
    });

    it("presigned inputs: no GetObject grant for them, and the URL is nowhere in plain resource inputs", async () => {
      const spec = kwykSpec({
        inputs: [
          { name: "t1", url: PRESIGNED_URL, access: "presigned", extract: "tgz", select: "**/*_T1w.nii" },
          { name: "atlas", url: "s3://openneuro.org/ds000001/atlas.nii.gz", access: "public" },
        ],
      });
      await declare(spec);
      const policy = JSON.parse(recorded.one(ROLE_POLICY).inputs.policy);
      expect(policy.Statement[0].Resource).to.have.length(3); // control area, agent bundle and results pointer only
      const signature = "X-Amz-Signature";
      for (const resource of recorded.resources) {
        if (resource.name === "staging") continue; // holds the spec as a secret (checked below)
        expect(JSON.stringify(resource.inputs)).not.to.contain(signature);
      }
    });
  });

  describe("staging keeps presigned URLs secret", () => {
    const bundle = { path: BUNDLE_PATH, sha256: BUNDLE_SHA };
    it("hands JobStaging the spec as a secret when it holds a presigned URL", async () => {
      const spec = withAgent(kwykSpec({ inputs: [{ name: "t1", url: PRESIGNED_URL, access: "presigned" }] }), bundle);
      const args = stagingArgs(spec, bundle);
      expect(await isSecret(args.specJson)).to.equal(true);
      expect(await isSecret(stagingInputs(args).specJson)).to.equal(true);
    });

    it("and as plain text when it holds none", async () => {
      const args = stagingArgs(withAgent(kwykSpec(), bundle), bundle);
      expect(await isSecret(args.specJson)).to.equal(false);
    });
  });

  describe("refusals before any resource exists", () => {
    beforeEach(() => recorded.reset());

    it("a GPU job on a type without GPUs", () => {
      expect(() =>
        declareJob(kwykSpec({ container: { gpus: 1 } }), { platform: "aws", agentBundlePath: BUNDLE_PATH }),
      ).to.throw(/container.gpus is 1 but instance.type m5.4xlarge has no GPU/);
      expect(recorded.resources).to.have.length(0);
    });

    it("a missing agent bundle", () => {
      expect(() => declareJob(kwykSpec(), { platform: "aws", agentBundlePath: "/nonexistent/agent.js" })).to.throw(
        /agent bundle not readable at \/nonexistent\/agent.js.*npm run build:agent/,
      );
      expect(recorded.resources).to.have.length(0);
    });

    it("labels that clash with reserved tag names", () => {
      expect(() =>
        declareJob(kwykSpec({ labels: { "aws:cloudformation": "x" } }), { platform: "aws", agentBundlePath: BUNDLE_PATH }),
      ).to.throw(/labels\.aws:cloudformation: reserved tag name/);
      expect(recorded.resources).to.have.length(0);
    });

    it("an invalid spec built by hand", () => {
      const bad = { ...kwykSpec(), instance: { ...kwykSpec().instance, type: "huge" } };
      expect(() => declareJob(bad, { platform: "aws", agentBundlePath: BUNDLE_PATH })).to.throw(/instance.type: expected an EC2 instance type/);
      expect(recorded.resources).to.have.length(0);
    });
  });
});

describe("infra: pure helpers", () => {
  it("picks the architecture from the instance family", () => {
    for (const type of ["m7g.large", "c6gn.xlarge", "t4g.micro", "x2gd.large", "g5g.xlarge", "is4gen.large", "r8g.large"]) {
      expect(instanceArchitecture(type), type).to.equal("arm64");
    }
    for (const type of ["m5.4xlarge", "c7i-flex.large", "g4dn.xlarge", "g4ad.xlarge", "p5.48xlarge", "m6idn.large", "t3.micro"]) {
      expect(instanceArchitecture(type), type).to.equal("x86_64");
    }
  });

  it("knows which families have GPUs", () => {
    expect(["g5.xlarge", "g4dn.xlarge", "p4d.24xlarge", "g5g.xlarge", "gr6.4xlarge"].every(instanceHasGpu)).to.equal(true);
    expect(["m5.4xlarge", "c6g.large", "inf2.xlarge", "t4g.micro"].some(instanceHasGpu)).to.equal(false);
  });

  it("keeps a larger GPU root volume and the arm64 GPU AMI for g5g", () => {
    const image = chooseMachineImage(kwykSpec({ container: { gpus: 1 }, instance: { type: "g5g.xlarge", rootVolumeGiB: 200 } }));
    expect(image).to.deep.equal({
      architecture: "arm64",
      parameter: "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id",
      rootVolumeGiB: 200,
    });
  });

  it("uses an explicit SSM parameter as given", () => {
    expect(chooseMachineImage(kwykSpec({ instance: { amiParameter: "/my/ami" } })).parameter).to.equal("/my/ami");
  });

  it("escapes IAM wildcard characters in object keys so a key grants only itself", () => {
    expect(iamLiteral("a*b?c$d")).to.equal("a${*}b${?}c${$}d");
    const spec = { ...kwykSpec(), inputs: [{ ...kwykSpec().inputs[0], url: "s3://bucket-a/odd*name?.tgz" }] };
    const policy = jobPolicyDocument({ ...spec, agent: { url: `s3://lab-results-bucket/${AGENT_KEY}`, sha256: BUNDLE_SHA } });
    expect(policy.Statement[0].Resource[0]).to.equal("arn:aws:s3:::bucket-a/odd${*}name${?}.tgz");
  });

  it("uses the region's partition in ARNs", () => {
    expect(partitionOf("us-gov-west-1")).to.equal("aws-us-gov");
    expect(partitionOf("cn-north-1")).to.equal("aws-cn");
    expect(partitionOf("eu-west-1")).to.equal("aws");
    const spec = kwykSpec({ instance: { region: "us-gov-west-1" } });
    const policy = jobPolicyDocument({ ...spec, agent: { url: `s3://lab-results-bucket/${AGENT_KEY}`, sha256: BUNDLE_SHA } });
    expect(policy.Statement.flatMap((s) => s.Resource).every((arn) => arn.startsWith("arn:aws-us-gov:s3:::"))).to.equal(true);
  });

  it("refuses a spec without an agent reference", () => {
    expect(() => planAwsJob(kwykSpec())).to.throw(/no agent bundle reference/);
  });

  it("refuses more labels than EC2's tag limit leaves room for", () => {
    const labels = Object.fromEntries(Array.from({ length: 47 }, (_, i) => [`l${i}`, "v"]));
    expect(() => jobTags({ jobId: "j", subject: "sub-01", labels }, "j")).to.throw(/at most 46 labels/);
  });
});

describe("index.ts: `pulumi up` of Pulumi.dev.yaml (mocked Pulumi)", () => {
  before(installMocks);
  // The program reads the subject's run lease before declaring anything: moto stands in for the lab's bucket.
  before(async () => {
    await sharedMoto();
    await testS3().send(new CreateBucketCommand({ Bucket: "my-lab-bucket" })).catch(() => undefined);
  });
  const loadConfig = () => {
    const doc = load(readFileSync(path.join(__dirname, "..", "Pulumi.dev.yaml"), "utf8")) as { config: Record<string, unknown> };
    const config = Object.fromEntries(Object.entries(doc.config).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]));
    pulumi.runtime.setAllConfig({ ...config, "cloudcompute:agentBundle": BUNDLE_PATH });
    return config;
  };

  it("declares the kwyk job from stack config, with the stack name as job id", async () => {
    loadConfig();
    recorded.reset();
    try {
      const program = await (require("../index") as typeof import("../index"))();
      await Promise.all([valueOf(program.instanceId), valueOf(program.specUrl)]);
      expect(program.jobId).to.equal(MOCK_STACK);
      expect(await valueOf(program.markerUrl)).to.equal(`s3://my-lab-bucket/kwyk/_cloudcompute/${MOCK_STACK}/marker.json`);
      const instance = recorded.one(INSTANCE).inputs;
      expect(instance.instanceType).to.equal("m5.4xlarge");
      expect(instance.region).to.equal("us-east-1");
      const staging = recorded.ofType(DYNAMIC).find((r) => r.name === "staging")!;
      expect(JSON.parse(staging.inputs.specJson).container.command).to.deep.equal(["-m", "bvwn_multi_prior", "{input}", "{output}/{subject}"]);
    } finally {
      pulumi.runtime.setAllConfig({});
    }
  });

  it("refuses a subject another driver runs now, naming it, before declaring anything", async () => {
    loadConfig();
    const subject = "NDARINV1A2B3C4D"; // Pulumi.dev.yaml's NDAR_INV1A2B3C4D, normalised
    const now = new Date();
    const lease = { apiVersion: "cloudcompute/v1", kind: "subject-lease", subject, leaseId: "x", periodSeconds: 300, holder: { user: "erin", host: "lab-ws3", pid: 77, jobId: "job-elsewhere" }, since: now.toISOString(), renewedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 300_000).toISOString() };
    const key = `kwyk/_cloudcompute/subjects/${subject}/lease.json`;
    await testS3().send(new PutObjectCommand({ Bucket: "my-lab-bucket", Key: key, Body: JSON.stringify(lease) }));
    recorded.reset();
    try {
      const err = await (require("../index") as typeof import("../index"))().then(() => undefined, (e: unknown) => e);
      expect(err).to.be.instanceOf(pulumi.RunError);
      expect((err as Error).message).to.include(`subject ${subject} is being run by erin@lab-ws3 (pid 77, job job-elsewhere)`);
      expect(recorded.ofType(INSTANCE)).to.deep.equal([]);
    } finally {
      pulumi.runtime.setAllConfig({});
    }
  });
});
