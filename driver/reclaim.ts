/**
 * What a cut-off update created but never recorded. When the engine dies (or is told to stop) while a create is in
 * flight, the state keeps only a *pending create*; `refresh --clear-pending-creates` drops it from the state, and the
 * instance it stood for would live on, billed, owned by no stack. So teardown reads the pending creates first and,
 * once the stack holds nothing, deletes exactly what they stood for: found by the tags each create declared (EC2
 * instances, security groups), by the name the engine had chosen and the job's tag (IAM role and instance profile),
 * or through the pid file a local agent's create writes.
 */
import type { EC2Client } from "@aws-sdk/client-ec2";
import type { IAMClient } from "@aws-sdk/client-iam";
import type { Stack } from "@pulumi/pulumi/automation";
import { JOB_TAG } from "../job/layout";

export interface PendingCreate {
  type: string;
  urn: string;
  inputs: Record<string, unknown>;
}

/** The creates the last update began and never finished recording. */
export async function pendingCreates(stack: Stack): Promise<PendingCreate[]> {
  const state = await stack.exportStack();
  const deployment = state.deployment as { pending_operations?: Array<{ type?: string; resource?: { type?: string; urn?: string; inputs?: Record<string, unknown> } }> } | undefined;
  return (deployment?.pending_operations ?? [])
    .filter((op) => op.type === "creating" && op.resource?.type && op.resource.urn)
    .map((op) => ({ type: op.resource!.type!, urn: op.resource!.urn!, inputs: op.resource!.inputs ?? {} }));
}


const LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"];

/**
 * EC2 filters matching exactly what one pending create declared: every `cloudcompute:*` tag in its inputs (job, stack,
 * subject) — the same job id on another backend or stack never matches — and its name where it has one.
 */
function filtersFor(create: PendingCreate, jobId: string): Array<{ Name: string; Values: string[] }> {
  const tags = (create.inputs.tags ?? {}) as Record<string, unknown>;
  const own = Object.entries(tags).filter(([key, value]) => key.startsWith("cloudcompute:") && typeof value === "string");
  if (!own.some(([key]) => key === JOB_TAG)) own.push([JOB_TAG, jobId]);
  return own.map(([key, value]) => ({ Name: `tag:${key}`, Values: [value as string] }));
}

/**
 * Delete the job's AWS resources that outlived its stack: only what a pending create stood for, found by the tags the
 * create declared (EC2 instances, security groups) or by the name the engine had chosen and the job's tag (IAM role,
 * instance profile). Called after destroy, when the stack holds nothing. Nothing else is touched: another stack's
 * job under the same id (another backend, a colleague) carries another `cloudcompute:stack` tag.
 */
export async function reclaimAws(
  jobId: string,
  pending: PendingCreate[],
  clients: { ec2: EC2Client; iam: () => IAMClient },
): Promise<string[]> {
  if (pending.length === 0) return [];
  const ec2Sdk = require("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
  const deleted: string[] = [];

  const instanceIds = new Set<string>();
  for (const create of pending.filter((p) => p.type === "aws:ec2/instance:Instance")) {
    const described = await clients.ec2.send(
      new ec2Sdk.DescribeInstancesCommand({ Filters: [...filtersFor(create, jobId), { Name: "instance-state-name", Values: LIVE_INSTANCE_STATES }] }),
    );
    for (const instance of (described.Reservations ?? []).flatMap((r) => r.Instances ?? [])) if (instance.InstanceId) instanceIds.add(instance.InstanceId);
  }
  if (instanceIds.size > 0) {
    const ids = [...instanceIds];
    await clients.ec2.send(new ec2Sdk.TerminateInstancesCommand({ InstanceIds: ids }));
    deleted.push(...ids.map((id) => `EC2 instance ${id} (terminated)`));
    // A security group can be deleted only once no instance uses it.
    await ec2Sdk.waitUntilInstanceTerminated({ client: clients.ec2, maxWaitTime: 600, minDelay: 5 }, { InstanceIds: ids });
  }
  for (const create of pending.filter((p) => p.type === "aws:ec2/securityGroup:SecurityGroup")) {
    const filters = filtersFor(create, jobId);
    if (typeof create.inputs.name === "string") filters.push({ Name: "group-name", Values: [create.inputs.name] });
    const groups = await clients.ec2.send(new ec2Sdk.DescribeSecurityGroupsCommand({ Filters: filters }));
    for (const group of groups.SecurityGroups ?? []) {
      await clients.ec2.send(new ec2Sdk.DeleteSecurityGroupCommand({ GroupId: group.GroupId }));
      deleted.push(`security group ${group.GroupId}`);
    }
  }

  const named = (type: string) =>
    pending.filter((p) => p.type === type && typeof p.inputs.name === "string").map((p) => p.inputs.name as string);
  const profiles = named("aws:iam/instanceProfile:InstanceProfile");
  const roles = named("aws:iam/role:Role");
  if (profiles.length + roles.length === 0) return deleted;
  const iamSdk = require("@aws-sdk/client-iam") as typeof import("@aws-sdk/client-iam");
  const iam = clients.iam();
  const ours = (tags: Array<{ Key?: string; Value?: string }> | undefined) => tags?.some((t) => t.Key === JOB_TAG && t.Value === jobId) ?? false;
  const missing = (err: unknown) => (err as { name?: string }).name === "NoSuchEntityException" || (err as { name?: string }).name === "NoSuchEntity";

  for (const name of profiles) {
    try {
      const { InstanceProfile: profile } = await iam.send(new iamSdk.GetInstanceProfileCommand({ InstanceProfileName: name }));
      if (!ours(profile?.Tags)) continue; // a name we chose that someone else holds: not ours to delete
      for (const role of profile?.Roles ?? []) {
        await iam.send(new iamSdk.RemoveRoleFromInstanceProfileCommand({ InstanceProfileName: name, RoleName: role.RoleName }));
      }
      await iam.send(new iamSdk.DeleteInstanceProfileCommand({ InstanceProfileName: name }));
      deleted.push(`IAM instance profile ${name}`);
    } catch (err) {
      if (!missing(err)) throw err;
    }
  }
  for (const name of roles) {
    try {
      const { Role: role } = await iam.send(new iamSdk.GetRoleCommand({ RoleName: name }));
      if (!ours(role?.Tags)) continue;
      const inline = await iam.send(new iamSdk.ListRolePoliciesCommand({ RoleName: name }));
      for (const policy of inline.PolicyNames ?? []) await iam.send(new iamSdk.DeleteRolePolicyCommand({ RoleName: name, PolicyName: policy }));
      const attached = await iam.send(new iamSdk.ListAttachedRolePoliciesCommand({ RoleName: name }));
      for (const policy of attached.AttachedPolicies ?? []) await iam.send(new iamSdk.DetachRolePolicyCommand({ RoleName: name, PolicyArn: policy.PolicyArn }));
      const profilesOfRole = await iam.send(new iamSdk.ListInstanceProfilesForRoleCommand({ RoleName: name }));
      for (const profile of profilesOfRole.InstanceProfiles ?? []) {
        await iam.send(new iamSdk.RemoveRoleFromInstanceProfileCommand({ InstanceProfileName: profile.InstanceProfileName, RoleName: name }));
      }
      await iam.send(new iamSdk.DeleteRoleCommand({ RoleName: name }));
      deleted.push(`IAM role ${name}`);
    } catch (err) {
      if (!missing(err)) throw err;
    }
  }
  return deleted;
}
