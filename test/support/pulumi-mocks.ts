/**
 * Pulumi mocks for the whole mocha process. `setMocks` is global and mocha runs every test file in one process, so
 * files share these mocks: call `installMocks()` in a `before` hook, `recorded.reset()` before declaring, and read
 * what was declared from `recorded`. The AWS invokes answer like a small account with a default VPC.
 */
import * as pulumi from "@pulumi/pulumi";

export const MOCK_PROJECT = "cloudcompute";
export const MOCK_STACK = "job-NDARINV1A2B3C4D-20261125T120000000Z";
export const MOCK_ACCOUNT = "123456789012";

/** The AMI each public SSM parameter resolves to in the mock account. */
export const MOCK_AMIS: Record<string, string> = {
  "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64": "ami-0a1b2c3d4e5f60001",
  "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64": "ami-0a1b2c3d4e5f60002",
  "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id": "ami-0a1b2c3d4e5f60003",
  "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id": "ami-0a1b2c3d4e5f60004",
};

export const DEFAULT_VPC_ID = "vpc-0defa017000000001";
/** Default subnets by zone; us-east-1e offers few types, like the real one. */
export const DEFAULT_SUBNETS: Record<string, string> = {
  "us-east-1a": "subnet-0aaaa000000000001",
  "us-east-1b": "subnet-0bbbb000000000002",
  "us-east-1e": "subnet-0eeee000000000005",
};
export const CUSTOM_VPC_ID = "vpc-0c0570m000000002";

export interface DeclaredResource {
  type: string;
  name: string;
  inputs: Record<string, any>;
  id: string;
}

export interface InvokeCall {
  token: string;
  inputs: Record<string, any>;
}

class Recorder {
  resources: DeclaredResource[] = [];
  invokes: InvokeCall[] = [];

  reset(): void {
    this.resources = [];
    this.invokes = [];
  }

  ofType(type: string): DeclaredResource[] {
    return this.resources.filter((r) => r.type === type);
  }

  /** The one resource of this type; fails the test when there are none or several. */
  one(type: string): DeclaredResource {
    const found = this.ofType(type);
    if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
    return found[0];
  }

  invokesOf(token: string): InvokeCall[] {
    return this.invokes.filter((call) => call.token === token);
  }
}

export const recorded = new Recorder();

function stateFor(args: pulumi.runtime.MockResourceArgs, id: string): Record<string, any> {
  const inputs = args.inputs;
  switch (args.type) {
    case "aws:iam/role:Role":
      return { ...inputs, name: inputs.name ?? id, arn: `arn:aws:iam::${MOCK_ACCOUNT}:role/${id}` };
    case "aws:iam/instanceProfile:InstanceProfile":
      return { ...inputs, name: inputs.name ?? id, arn: `arn:aws:iam::${MOCK_ACCOUNT}:instance-profile/${id}` };
    case "pulumi-nodejs:dynamic:Resource":
      // JobStaging reports where it put the spec; other dynamic resources echo their inputs.
      return inputs.specBucket ? { ...inputs, specUrl: `s3://${inputs.specBucket}/${inputs.specKey}`, agentUploaded: true } : inputs;
    default:
      return inputs;
  }
}

function idFor(args: pulumi.runtime.MockResourceArgs): string {
  switch (args.type) {
    case "aws:ec2/instance:Instance":
      return "i-0123456789abcdef0";
    case "aws:ec2/securityGroup:SecurityGroup":
      return "sg-0123456789abcdef0";
    default:
      return `${args.name}-id`;
  }
}

const mocks: pulumi.runtime.Mocks = {
  newResource(args) {
    const id = idFor(args);
    recorded.resources.push({ type: args.type, name: args.name, inputs: args.inputs, id });
    return { id, state: stateFor(args, id) };
  },
  call(args) {
    recorded.invokes.push({ token: args.token, inputs: args.inputs });
    const inputs = args.inputs;
    switch (args.token) {
      case "aws:ssm/getParameter:getParameter": {
        const value = MOCK_AMIS[inputs.name];
        if (!value) throw new Error(`ParameterNotFound: ${inputs.name}`);
        return { id: inputs.name, name: inputs.name, type: "String", value, insecureValue: value };
      }
      case "aws:ec2/getVpc:getVpc":
        return { id: DEFAULT_VPC_ID, default: true, cidrBlock: "172.31.0.0/16" };
      case "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {
        const type = filterValues(inputs, "instance-type")[0] ?? "";
        // Newer types are missing from us-east-1e, as in the real region.
        const zones = /^(m5|c5|t3)\./.test(type) ? ["us-east-1a", "us-east-1b", "us-east-1e"] : ["us-east-1a", "us-east-1b"];
        const offered = type.startsWith("x9.") ? [] : zones;
        return { id: inputs.region ?? "us-east-1", instanceTypes: offered.map(() => type), locations: offered, locationTypes: offered.map(() => "availability-zone") };
      }
      case "aws:ec2/getSubnets:getSubnets": {
        const zones = filterValues(inputs, "availability-zone");
        const ids = Object.entries(DEFAULT_SUBNETS)
          .filter(([zone]) => zones.includes(zone))
          .map(([, id]) => id);
        return { id: "subnets", ids };
      }
      case "aws:ec2/getSubnet:getSubnet":
        return { id: inputs.id, vpcId: CUSTOM_VPC_ID, availabilityZone: "us-east-1a" };
      default:
        throw new Error(`unmocked invoke ${args.token}`);
    }
  },
};

function filterValues(inputs: Record<string, any>, name: string): string[] {
  const filter = (inputs.filters ?? []).find((f: { name: string }) => f.name === name);
  return filter?.values ?? [];
}

let installed: Promise<void> | undefined;

/** Install the shared mocks once per process. */
export function installMocks(): Promise<void> {
  installed ??= pulumi.runtime.setMocks(mocks, MOCK_PROJECT, MOCK_STACK, false);
  return installed;
}

/** The value of an output (mocks resolve everything; no unknowns outside preview). */
export function valueOf<T>(output: pulumi.Output<T> | undefined): Promise<T> {
  if (!output) throw new Error("no output");
  return new Promise((resolve) => output.apply((value) => resolve(value)));
}

/** Whether an output is marked secret. */
export function isSecret(output: pulumi.Input<unknown>): Promise<boolean> {
  return pulumi.isSecret(pulumi.output(output));
}
