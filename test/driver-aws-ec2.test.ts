/**
 * The driver's EC2 paths against moto's EC2 (real SDK, real server): the instance state checks the wait makes, the
 * spot price lookup for cost estimates, the orphan search of `gc --aws` across every region jobs ran in, and the
 * teardown's reclaim of what a cut-off update created without recording it (pending creates), found by tag.
 */
import { totalUsdPerHour } from "../job/pricing";
import { expect } from "chai";
import {
  CreateSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type _InstanceType,
} from "@aws-sdk/client-ec2";
import {
  AddRoleToInstanceProfileCommand,
  CreateInstanceProfileCommand,
  CreateRoleCommand,
  IAMClient,
  ListInstanceProfilesCommand,
  ListRolesCommand,
  PutRolePolicyCommand,
} from "@aws-sdk/client-iam";
import { awsPlatform, JOB_TAG } from "../driver/platform";
import { isRetryable } from "../driver/run";
import { parseJobSpec, type JobSpec } from "../job/spec";
import { EC2_ASSUME_ROLE_POLICY } from "../infra/policy";
import { sharedMoto } from "./support/fixtures";

function spec(region: string, spot = false): JobSpec {
  return parseJobSpec({
    apiVersion: "cloudcompute/v1",
    jobId: `job-ec2-${region}`,
    subject: "sub-01",
    inputs: [{ name: "t1", url: "s3://cc-ec2-bucket/in.nii" }],
    container: { image: "x" },
    outputs: { prefix: "s3://cc-ec2-bucket/out" },
    instance: { type: "m5.large", region, spot },
  });
}

describe("driver: EC2 paths against moto EC2", function () {
  this.timeout(60_000);
  const clients = new Map<string, EC2Client>();
  const ec2 = (region: string) => {
    if (!clients.has(region)) clients.set(region, new EC2Client({ region }));
    return clients.get(region)!;
  };
  async function launch(region: string, jobId: string, spot = false, extraTags: Array<{ Key: string; Value: string }> = []): Promise<string> {
    const images = await ec2(region).send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    const res = await ec2(region).send(
      new RunInstancesCommand({
        ImageId: images.Images![0].ImageId!,
        InstanceType: "m5.large" as _InstanceType,
        MinCount: 1,
        MaxCount: 1,
        InstanceMarketOptions: spot ? { MarketType: "spot", SpotOptions: { SpotInstanceType: "one-time" } } : undefined,
        TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: JOB_TAG, Value: jobId }, ...extraTags] }],
      }),
    );
    return res.Instances![0].InstanceId!;
  }

  before(async () => {
    await sharedMoto();
  });

  it("sees a running instance as alive and a terminated one as lost, without calling it retryable", async () => {
    const id = await launch("us-east-1", "job-ec2-running");
    expect(await awsPlatform.computeState(id, spec("us-east-1"))).to.deep.equal({ alive: true });
    await ec2("us-east-1").send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    const gone = await awsPlatform.computeState(id, spec("us-east-1"));
    expect(gone.alive).to.equal(false);
    expect(gone.reason).to.equal("instance-lost");
    expect(gone.detail).to.match(/^(terminated|shutting-down)/);
    // A user- or watchdog-initiated shutdown is not EC2 losing the instance: no retry.
    expect(isRetryable({ reason: gone.reason, message: `the compute ended without a completion marker: ${gone.detail}` })).to.equal(false);
  });

  it("reports an instance id EC2 does not know as lost", async () => {
    const state = await awsPlatform.computeState("i-0123456789abcdef0", spec("us-east-1"));
    expect(state).to.include({ alive: false, reason: "instance-lost" });
  });

  it("looks at many instances at once in one DescribeInstances, and an unknown id among them spoils none of the others", async () => {
    const live = [await launch("us-east-1", "job-ec2-many-1"), await launch("us-east-1", "job-ec2-many-2"), await launch("us-east-1", "job-ec2-many-3")];
    const dead = await launch("us-east-1", "job-ec2-many-4");
    await ec2("us-east-1").send(new TerminateInstancesCommand({ InstanceIds: [dead] }));
    const calls: string[][] = [];
    const { ec2Client } = require("../driver/platform") as { ec2Client: (region: string) => EC2Client };
    ec2Client("us-east-1").middlewareStack.add((next) => async (args) => {
      const input = args.input as { InstanceIds?: string[] };
      if (input.InstanceIds) calls.push([...input.InstanceIds]);
      return next(args);
    }, { step: "initialize", name: "countDescribes" });
    try {
      // A batch's waits look at their jobs at about the same moment: one call answers them all.
      const states = await Promise.all([...live, dead, "i-0123456789abcdef0", live[0]].map((id) => awsPlatform.computeState(id, spec("us-east-1"))));
      expect(states.map((s) => s.alive)).to.deep.equal([true, true, true, false, false, true]);
      expect(states[4]).to.include({ reason: "instance-lost", detail: "instance not found" });
      // One call for all; the unknown id fails it, so each is looked at alone once: never one per waiting job and round.
      expect(calls[0].sort(), "the first call").to.deep.equal([...live, dead, "i-0123456789abcdef0"].sort());
      expect(calls.length, "calls: one together, then one per id").to.equal(1 + 5);
      calls.length = 0;
      await Promise.all(live.map((id) => awsPlatform.computeState(id, spec("us-east-1"))));
      expect(calls, "known ids only: one call").to.have.length(1);
    } finally {
      ec2Client("us-east-1").middlewareStack.remove("countDescribes");
    }
  });

  it("prices a spot job from DescribeSpotPriceHistory (plus the volume)", async () => {
    const total = async (s: ReturnType<typeof spec>) => {
      const prices = await awsPlatform.prices(s);
      return prices && totalUsdPerHour(prices);
    };
    const onDemand = await total(spec("us-east-1"));
    const spot = await total(spec("us-east-1", true));
    expect(onDemand).to.be.a("number").and.greaterThan(0.096); // m5.large on demand + gp3
    expect(spot).to.be.a("number").and.greaterThan(0);
    expect(spot).to.not.equal(onDemand);
    // The spot price says it came from the region's history, dated by its entry; the volume is priced beside it.
    const prices = await awsPlatform.prices(spec("us-east-1", true));
    expect(prices!.instance.source).to.equal("spot-history");
    expect(Date.parse(prices!.instance.asOf)).to.not.be.NaN;
    expect(prices!.volume).to.include({ gib: 50, usdPerGibMonth: 0.08, source: "built-in table" });
    // What spot saved is reckoned against the same type's on-demand price, carried beside it; on demand carries none.
    expect(prices!.onDemand?.usdPerHour).to.equal(0.096);
    expect((await awsPlatform.prices(spec("us-east-1")))!.onDemand).to.equal(undefined);
  });

  it("says when an instance was launched (billing counts from there), and nothing for an unknown one", async () => {
    const before = Date.now();
    const id = await launch("us-east-1", "job-launch-time");
    const launchedAt = await awsPlatform.launchedAt(id, spec("us-east-1"));
    expect(launchedAt).to.be.a("number");
    // moto stamps LaunchTime in whole seconds at the launch
    expect(launchedAt!).to.be.within(before - 2000, Date.now() + 1000);
    expect(await awsPlatform.launchedAt("i-0123456789abcdef0", spec("us-east-1"))).to.equal(undefined);
  });

  it("gc --aws finds tagged instances no live job owns in every recorded region, and skips owned ones", async () => {
    const east = await launch("us-east-1", "job-orphan-east");
    const west = await launch("eu-west-1", "job-orphan-west", true);
    const owned = await launch("eu-west-1", "job-owned-west");
    const orphans = await awsPlatform.findOrphans(new Set([owned]), new Set(["us-east-1", "eu-west-1"]));
    const found = orphans.filter((o) => [east, west, owned].includes(o.instanceId));
    expect(found.map((o) => [o.region, o.instanceId, o.jobId]).sort()).to.deep.equal(
      [
        ["eu-west-1", west, "job-orphan-west"],
        ["us-east-1", east, "job-orphan-east"],
      ].sort(),
    );
    // Only the default region without the recorded ones: the eu-west-1 orphan would be missed.
    const defaultOnly = await awsPlatform.findOrphans(new Set([owned]));
    expect(defaultOnly.some((o) => o.instanceId === west)).to.equal(false);
  });

  it("teardown's reclaim deletes what pending creates stood for, found by the job's tag — and nothing of another job", async () => {
    const region = "eu-west-1";
    const jobId = "job-pending-create";
    const iam = new IAMClient({ region });
    const tags = [{ Key: JOB_TAG, Value: jobId }, { Key: "cloudcompute:stack", Value: jobId }];
    const declared = Object.fromEntries(tags.map((t) => [t.Key, t.Value]));
    // What an update cut off mid-create leaves: a live instance and security group, a role and profile the state lost.
    const instance = await launch(region, jobId, false, tags.slice(1));
    const bystander = await launch(region, "job-someone-else");
    // The same job id used by a colleague with another backend/stack (its stack tag differs): never touched.
    const sameIdElsewhere = await launch(region, jobId, false, [{ Key: "cloudcompute:stack", Value: "organization/cloudcompute/other-backend" }]);
    const group = await ec2(region).send(
      new CreateSecurityGroupCommand({ GroupName: `cc-${jobId}`, Description: "job sg", TagSpecifications: [{ ResourceType: "security-group", Tags: tags }] }),
    );
    await iam.send(new CreateRoleCommand({ RoleName: "job-role-a1b2c3", AssumeRolePolicyDocument: JSON.stringify(EC2_ASSUME_ROLE_POLICY), Tags: tags }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "job-role-a1b2c3", PolicyName: "job-s3-access", PolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "*" }] }) }));
    await iam.send(new CreateInstanceProfileCommand({ InstanceProfileName: "job-profile-d4e5f6", Tags: tags }));
    await iam.send(new AddRoleToInstanceProfileCommand({ InstanceProfileName: "job-profile-d4e5f6", RoleName: "job-role-a1b2c3" }));
    // A role of the same name pattern someone else owns: named by a pending create, but not tagged with this job.
    await iam.send(new CreateRoleCommand({ RoleName: "job-role-foreign", AssumeRolePolicyDocument: JSON.stringify(EC2_ASSUME_ROLE_POLICY) }));
    const pending = [
      { type: "aws:iam/role:Role", urn: "urn:role", inputs: { name: "job-role-a1b2c3" } },
      { type: "aws:iam/role:Role", urn: "urn:foreign", inputs: { name: "job-role-foreign" } },
      { type: "aws:iam/instanceProfile:InstanceProfile", urn: "urn:profile", inputs: { name: "job-profile-d4e5f6" } },
      { type: "aws:ec2/instance:Instance", urn: "urn:instance", inputs: { tags: declared } },
      { type: "aws:ec2/securityGroup:SecurityGroup", urn: "urn:sg", inputs: { name: `cc-${jobId}`, tags: declared } },
    ];

    const deleted = await awsPlatform.reclaim(jobId, region, pending);

    expect(deleted).to.include.members([`EC2 instance ${instance} (terminated)`, `security group ${group.GroupId}`, "IAM role job-role-a1b2c3", "IAM instance profile job-profile-d4e5f6"]);
    const states = async (ids: string[]) =>
      (await ec2(region).send(new DescribeInstancesCommand({ InstanceIds: ids }))).Reservations!.flatMap((r) => r.Instances!).map((i) => i.State!.Name);
    expect(await states([instance])).to.deep.equal(["terminated"]);
    expect(await states([bystander]), "another job's instance").to.deep.equal(["running"]);
    expect(await states([sameIdElsewhere]), "the same job id in another stack").to.deep.equal(["running"]);
    // Nothing pending (a clean teardown): nothing is looked for, nothing deleted.
    expect(await awsPlatform.reclaim(jobId, region, [])).to.deep.equal([]);
    expect(await states([sameIdElsewhere])).to.deep.equal(["running"]);
    const groups = await ec2(region).send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: `tag:${JOB_TAG}`, Values: [jobId] }] }));
    expect(groups.SecurityGroups ?? []).to.have.length(0);
    const roles = (await iam.send(new ListRolesCommand({}))).Roles!.map((r) => r.RoleName);
    expect(roles).to.not.include("job-role-a1b2c3");
    expect(roles, "an untagged role of the same name pattern").to.include("job-role-foreign");
    const profiles = (await iam.send(new ListInstanceProfilesCommand({}))).InstanceProfiles!.map((p) => p.InstanceProfileName);
    expect(profiles).to.not.include("job-profile-d4e5f6");
    // Run again (a second cancel): nothing left to delete, no error.
    expect(await awsPlatform.reclaim(jobId, region, pending)).to.deep.equal([]);
  });
});
