/**
 * The driver's EC2 paths against moto's EC2 (real SDK, real server): the instance state checks the wait makes, the
 * spot price lookup for cost estimates, and the orphan search of `gc --aws` across every region jobs ran in.
 */
import { expect } from "chai";
import { DescribeImagesCommand, EC2Client, RunInstancesCommand, TerminateInstancesCommand, type _InstanceType } from "@aws-sdk/client-ec2";
import { awsPlatform, JOB_TAG } from "../driver/platform";
import { isRetryable } from "../driver/run";
import { parseJobSpec, type JobSpec } from "../job/spec";
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
  async function launch(region: string, jobId: string, spot = false): Promise<string> {
    const images = await ec2(region).send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    const res = await ec2(region).send(
      new RunInstancesCommand({
        ImageId: images.Images![0].ImageId!,
        InstanceType: "m5.large" as _InstanceType,
        MinCount: 1,
        MaxCount: 1,
        InstanceMarketOptions: spot ? { MarketType: "spot", SpotOptions: { SpotInstanceType: "one-time" } } : undefined,
        TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: JOB_TAG, Value: jobId }] }],
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

  it("prices a spot job from DescribeSpotPriceHistory (plus the volume)", async () => {
    const onDemand = await awsPlatform.pricePerHour(spec("us-east-1"));
    const spot = await awsPlatform.pricePerHour(spec("us-east-1", true));
    expect(onDemand).to.be.a("number").and.greaterThan(0.096); // m5.large on demand + gp3
    expect(spot).to.be.a("number").and.greaterThan(0);
    expect(spot).to.not.equal(onDemand);
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
});
