/**
 * Quota caps through the real CLI, as a user sees them: moto for EC2 (instances running, instance types) and IAM
 * (GetAccountSummary), recorded Service Quotas documents for the EC2 vCPU quotas (moto 5.2.1 has none). A job or an
 * explicit --concurrency that cannot fit is refused with exit 2 and the numbers before anything exists; a default
 * concurrency is capped and says so; a quota that cannot be read only warns; the local platform is not checked.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { DescribeImagesCommand, EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { FakeServiceQuotasOptions, startFakeServiceQuotas, type FakeServiceQuotas } from "../sandbox/fake-service-quotas";
import { scenario } from "./support/reliability";

const SUBJECTS = ["NDARINV0000AAAA", "NDARINV0000BBBB", "NDARINV0000CCCC", "NDARINV0000DDDD", "NDARINV0000EEEE"];
const STANDARD = `"Running On-Demand Standard \\(A, C, D, H, I, M, R, T, Z\\) instances" \\(L-1216C47A\\) in us-east-1`;

describe("quotas before launch (real CLI, moto, recorded Service Quotas)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let quotas: FakeServiceQuotas;
  const served: FakeServiceQuotasOptions = { quotas: { "L-1216C47A": 64 } };
  let config: string;
  let subjectsFile: string;
  const aws = ["--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu", "--instance-type", "m5.4xlarge"];

  /** Nothing of a job exists: no stack, no job record, no S3 object, no batch directory. */
  const expectNothingCreated = async () => {
    const stacks = path.join(sandbox.home, "state", ".pulumi", "stacks");
    expect(fs.existsSync(stacks) ? fs.readdirSync(stacks, { recursive: true }).filter((f) => String(f).endsWith(".json")) : []).to.deep.equal([]);
    expect(sandbox.records()).to.deep.equal([]);
    expect(fs.existsSync(path.join(sandbox.home, "batches"))).to.equal(false);
    const objects = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket }));
    expect((objects.Contents ?? []).map((o) => o.Key).filter((k) => !k!.startsWith("abcd/"))).to.deep.equal([]);
  };

  before(async () => {
    quotas = await startFakeServiceQuotas(served);
    sandbox = await startDriverSandbox(quotas.env);
    config = sandbox.writeConfig("quotas.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }));
    subjectsFile = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(subjectsFile, SUBJECTS.join("\n") + "\n");
    // 16 vCPUs of the standard class in use: two m5.2xlarge.
    const ec2 = new EC2Client({ region: "us-east-1", endpoint: sandbox.moto.endpoint, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
    const image = (await ec2.send(new DescribeImagesCommand({}))).Images![0].ImageId!;
    await ec2.send(new RunInstancesCommand({ ImageId: image, InstanceType: "m5.2xlarge", MinCount: 2, MaxCount: 2 }));
  });
  after(async () => {
    await sandbox?.stop();
    await quotas?.stop();
  });
  beforeEach(() => {
    served.quotas = { "L-1216C47A": 64 };
    served.deny = false;
  });

  it("--dry-run --json shows the figures: quota, in use, per job, jobs that fit, roles and profiles left", async () => {
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws, "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const { quotas: shown } = JSON.parse(res.stdout);
    expect(shown.vcpus).to.deep.equal({ quotaCode: "L-1216C47A", quotaName: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", quota: 64, inUse: 16, perJob: 16, fitsJobs: 3 });
    expect(shown.iam.roles).to.deep.equal({ used: 0, quota: 1000, left: 1000 });
    expect(shown.iam.instanceProfiles.left).to.equal(1000);
    expect(shown).to.deep.include({ checked: true, region: "us-east-1", instanceType: "m5.4xlarge", market: "on-demand", fitsJobs: 3, unknown: [] });
  });

  it("the local platform is not checked, and says so", async () => {
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(JSON.parse(res.stdout).quotas).to.deep.equal({ checked: false, note: "the local platform has no account quotas: not checked", unknown: [] });
    expect(quotas.requests.length).to.be.greaterThan(0); // (from the aws cases) — the local run itself asked nothing:
    const before = quotas.requests.length;
    await sandbox.run(["--config", config, "--subject", SUBJECTS[0], "--dry-run", "--json"]);
    expect(quotas.requests.length).to.equal(before);
  });

  it("a batch's default concurrency is capped to what fits, and says so", async () => {
    await scenario("bad input", "quotas", "a batch whose default concurrency (4) does not fit the vCPU quota", "capped to 3 with the numbers, exit 0 (dry run)", async () => {
      const res = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, ...aws, "--dry-run", "--json"]);
      expect(res.code, res.stderr).to.equal(0);
      const line = res.stderr.split("\n").find((l) => l.includes("concurrency capped"));
      expect(line).to.match(new RegExp(`^\\[batch\\] concurrency capped to 3 \\(asked 4\\): EC2 quota ${STANDARD} is 64 vCPUs, 16 in use, m5\\.4xlarge needs 16 per job: 3 job\\(s\\) fit; IAM: 0 of 1000 roles and 0 of 1000 instance profiles used, one of each per job: 1000 job\\(s\\) fit$`));
      expect(JSON.parse(res.stdout).quotas.plan).to.deep.equal({ requested: 4, explicit: false, concurrency: 3, capped: line!.replace("[batch] ", "") });
      return line!;
    });
  });

  it("an explicit --concurrency that cannot fit is refused with the numbers, before anything exists", async () => {
    await scenario("bad input", "quotas", "--concurrency 5 when 3 jobs fit the vCPU quota", "exit 2, the quota, the use, the need and the fit in the message, nothing created", async () => {
      const res = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, ...aws, "--concurrency", "5"]);
      expect(res.code, res.stderr).to.equal(2);
      expect(res.stderr).to.match(new RegExp(`error: --concurrency 5 cannot fit: EC2 quota ${STANDARD} is 64 vCPUs, 16 in use, m5\\.4xlarge needs 16 per job: 3 job\\(s\\) fit; .*Nothing was created; give --concurrency 3 or less, or ask AWS for more \\(Service Quotas → Amazon EC2 → "Running On-Demand Standard`));
      await expectNothingCreated();
      return res.stderr.trim().split("\n").find((l) => l.startsWith("error:"))!;
    });
    // Within what fits, it stands (dry run: the plan keeps it).
    const ok = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, ...aws, "--concurrency", "3", "--dry-run", "--json"]);
    expect(ok.code, ok.stderr).to.equal(0);
    expect(JSON.parse(ok.stdout).quotas.plan).to.deep.equal({ requested: 3, explicit: true, concurrency: 3 });
  });

  it("a single job that cannot fit is refused with the numbers, before anything exists", async () => {
    served.quotas = { "L-1216C47A": 24 };
    await scenario("bad input", "quotas", "one m5.4xlarge job with 8 of 24 standard vCPUs free", "exit 2 naming the quota and the figures, nothing created", async () => {
      const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws]);
      expect(res.code, res.stderr).to.equal(2);
      expect(res.stderr).to.match(new RegExp(`error: this job does not fit the account's quotas now: EC2 quota ${STANDARD} is 24 vCPUs, 16 in use, m5\\.4xlarge needs 16 per job: 0 job\\(s\\) fit`));
      await expectNothingCreated();
      return res.stderr.trim().split("\n").find((l) => l.startsWith("error:"))!;
    });
  });

  it("a quota the user may not read only warns: the run goes on unchecked", async () => {
    served.deny = true;
    const res = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, ...aws, "--concurrency", "5", "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.match(/warning: quota not checked: EC2 vCPU quota "Running On-Demand Standard .*" \(L-1216C47A\) in us-east-1: AccessDeniedException: .*not authorized to perform: servicequotas:GetServiceQuota/);
    const shown = JSON.parse(res.stdout).quotas;
    expect(shown.vcpus).to.equal(undefined);
    expect(shown.fitsJobs).to.equal(1000); // IAM still read
    expect(shown.plan.concurrency).to.equal(5);
  });

  it("spot jobs weigh the spot quota", async () => {
    served.quotas = { "L-34B43A08": 32 };
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws, "--spot", "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    // The running m5.2xlarge are on-demand: none of the spot quota is in use.
    expect(JSON.parse(res.stdout).quotas.vcpus).to.deep.include({ quotaCode: "L-34B43A08", quota: 32, inUse: 0, fitsJobs: 2 });
  });
});
