/**
 * `AwsJob`: the AWS resources of one job — an IAM role that can touch only the job's objects, its instance profile,
 * a security group with no inbound rules, and a self-terminating EC2 instance whose user-data starts the agent.
 */
import * as pulumi from "@pulumi/pulumi";
import { InstanceProfile } from "@pulumi/aws/iam/instanceProfile";
import { Role } from "@pulumi/aws/iam/role";
import { RolePolicy } from "@pulumi/aws/iam/rolePolicy";
import { Instance } from "@pulumi/aws/ec2/instance";
import { SecurityGroup } from "@pulumi/aws/ec2/securityGroup";
import { getInstanceTypeOfferingsOutput } from "@pulumi/aws/ec2/getInstanceTypeOfferings";
import { getSubnetOutput } from "@pulumi/aws/ec2/getSubnet";
import { getSubnetsOutput } from "@pulumi/aws/ec2/getSubnets";
import { getVpcOutput } from "@pulumi/aws/ec2/getVpc";
import { getParameterOutput } from "@pulumi/aws/ssm/getParameter";
import { checkPlatformSupport } from "../job/config";
import { JOB_TAG, markerUrl } from "../job/layout";
import type { JobSpec } from "../job/spec";
import { chooseMachineImage, MachineImage } from "./ami";
import { EC2_ASSUME_ROLE_POLICY, jobPolicyDocument, PolicyDocument } from "./policy";
import { ProfilePropagation } from "./propagation";
import { encodeUserData, renderUserData } from "./userdata";

/** Outbound only what image pulls, package installs and S3 need. DNS, NTP and IMDS are link-local, not filtered. */
export const EGRESS_PORTS = [443, 80] as const;

/** EC2 allows 50 tags per resource; ours take 4. */
const MAX_LABELS = 46;

export interface AwsJobArgs {
  /** A validated spec whose `agent` is set (the bundle is staged). */
  spec: JobSpec;
  /** Resources the instance must wait for, e.g. the JobStaging that puts spec.json and the agent in S3. */
  startAfter?: pulumi.Resource[];
  /** Pause after creating the instance profile (IAM propagation). Default 15 s. */
  profilePropagationSeconds?: number;
  /** The checked plan, when the caller made it earlier (before declaring other resources); else made here. */
  plan?: AwsJobPlan;
}

/** Everything about the job's AWS resources that can be refused, worked out before any resource exists. */
export interface AwsJobPlan {
  image: MachineImage;
  policy: PolicyDocument;
  userData: { userData?: string; userDataBase64?: string };
  tags: Record<string, string>;
}

/** Throws (naming the field) when the job cannot run as specified. */
export function planAwsJob(spec: JobSpec): AwsJobPlan {
  checkPlatformSupport(spec, "aws");
  return {
    image: chooseMachineImage(spec),
    policy: jobPolicyDocument(spec),
    userData: encodeUserData(renderUserData(spec)),
    tags: jobTags(spec, pulumi.getStack()),
  };
}

/** Tags on every resource of the job (instance and volumes included) so each is traceable to its job and stack. */
export function jobTags(spec: Pick<JobSpec, "jobId" | "subject" | "labels">, stack: string): Record<string, string> {
  const labels = Object.entries(spec.labels);
  const reserved = labels.filter(([name]) => /^aws:/i.test(name) || /^cloudcompute:/.test(name) || name === "Name");
  if (reserved.length > 0) {
    throw new Error(`labels: ${reserved.map(([n]) => `"${n}"`).join(", ")} clash with reserved tag names (aws:*, cloudcompute:*, Name)`);
  }
  if (labels.length > MAX_LABELS) throw new Error(`labels: at most ${MAX_LABELS} labels fit in EC2's tag limit, got ${labels.length}`);
  return {
    ...spec.labels,
    [JOB_TAG]: spec.jobId,
    "cloudcompute:subject": spec.subject,
    "cloudcompute:stack": stack,
    Name: `cloudcompute-${spec.jobId}`,
  };
}

interface Placement {
  subnetId: pulumi.Input<string>;
  vpcId: pulumi.Input<string>;
  /** The default VPC reaches the internet only through a public IP; a given subnet brings its own route (or NAT). */
  publicIp?: boolean;
}

export class AwsJob extends pulumi.ComponentResource {
  readonly instanceId: pulumi.Output<string>;
  readonly roleArn: pulumi.Output<string>;
  readonly markerUrl: pulumi.Output<string>;
  readonly region: pulumi.Output<string>;

  constructor(name: string, args: AwsJobArgs, opts?: pulumi.ComponentResourceOptions) {
    super("cloudcompute:job:AwsJob", name, {}, opts);
    const { spec } = args;
    const region = spec.instance.region;
    const { image, policy, userData, tags } = args.plan ?? planAwsJob(spec);
    const child = { parent: this };

    const role = new Role(
      `${name}-role`,
      { description: `cloudcompute job ${spec.jobId}: instance role`, assumeRolePolicy: JSON.stringify(EC2_ASSUME_ROLE_POLICY), tags },
      child,
    );
    const rolePolicy = new RolePolicy(`${name}-s3-access`, { role: role.name, policy: JSON.stringify(policy) }, child);
    const profile = new InstanceProfile(`${name}-profile`, { role: role.name, tags }, child);
    const propagated = new ProfilePropagation(
      `${name}-profile-propagation`,
      { profileName: profile.name, seconds: args.profilePropagationSeconds ?? 15 },
      child,
    );

    const placement = this.placement(spec, child);
    const securityGroup = new SecurityGroup(
      `${name}-sg`,
      {
        region,
        vpcId: placement.vpcId,
        description: `cloudcompute job ${spec.jobId}: no inbound, outbound HTTP(S) only`,
        ingress: [],
        egress: EGRESS_PORTS.map((port) => ({
          description: port === 443 ? "HTTPS: S3, registries, package mirrors" : "HTTP: package mirrors",
          protocol: "tcp",
          fromPort: port,
          toPort: port,
          cidrBlocks: ["0.0.0.0/0"],
          ipv6CidrBlocks: ["::/0"],
        })),
        tags,
      },
      child,
    );

    const ami = image.ami ?? getParameterOutput({ name: image.parameter!, region }, child).value;
    const instance = new Instance(
      `${name}-instance`,
      {
        region,
        ami,
        instanceType: spec.instance.type,
        subnetId: placement.subnetId,
        vpcSecurityGroupIds: [securityGroup.id],
        associatePublicIpAddress: placement.publicIp,
        iamInstanceProfile: propagated.profileName,
        instanceInitiatedShutdownBehavior: "terminate",
        // Hop limit 1: the agent runs on the host; a container on a bridge network is one hop further and cannot get
        // an IMDSv2 token, so code in the image can never take the role's credentials and forge a marker.
        metadataOptions: { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1, instanceMetadataTags: "disabled" },
        rootBlockDevice: { volumeType: "gp3", volumeSize: image.rootVolumeGiB, encrypted: true, deleteOnTermination: true },
        instanceMarketOptions: spec.instance.spot
          ? { marketType: "spot", spotOptions: { spotInstanceType: "one-time", instanceInterruptionBehavior: "terminate" } }
          : undefined,
        ...userData,
        userDataReplaceOnChange: true,
        tags,
        volumeTags: tags,
      },
      // The policy must be in force and the spec staged before the agent starts. A second `pulumi up` (a new launch)
      // terminates the old instance before the new one starts: two launches of one job never run, or promote, at once.
      { parent: this, dependsOn: [rolePolicy, ...(args.startAfter ?? [])], deleteBeforeReplace: true },
    );

    this.instanceId = instance.id;
    this.roleArn = role.arn;
    this.markerUrl = pulumi.output(markerUrl(spec));
    this.region = pulumi.output(region);
    this.registerOutputs({ instanceId: this.instanceId, roleArn: this.roleArn, markerUrl: this.markerUrl, region: this.region });
  }

  /** The given subnet, or a default subnet of the default VPC in a zone that offers the instance type. */
  private placement(spec: JobSpec, opts: pulumi.InvokeOutputOptions): Placement {
    const region = spec.instance.region;
    if (spec.instance.subnetId) {
      const subnet = getSubnetOutput({ id: spec.instance.subnetId, region }, opts);
      return { subnetId: spec.instance.subnetId, vpcId: subnet.vpcId };
    }
    const vpc = getVpcOutput({ default: true, region }, opts);
    const zones = getInstanceTypeOfferingsOutput(
      { locationType: "availability-zone", filters: [{ name: "instance-type", values: [spec.instance.type] }], region },
      opts,
    );
    const subnets = getSubnetsOutput(
      {
        region,
        filters: [
          { name: "vpc-id", values: [vpc.id] },
          { name: "default-for-az", values: ["true"] },
          { name: "availability-zone", values: zones.locations },
        ],
      },
      opts,
    );
    const subnetId = subnets.ids.apply((ids) => {
      if (ids.length === 0) {
        throw new Error(`no default subnet in ${region} is in a zone offering ${spec.instance.type}: set cloudcompute:subnetId`);
      }
      return [...ids].sort()[0];
    });
    return { subnetId, vpcId: vpc.id, publicIp: true };
  }
}
