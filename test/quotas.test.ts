/**
 * Quotas before launch and backoff instead of failing: the quota class of instance types, the arithmetic and the
 * concurrency plan, the reads against moto (EC2 instance types and instances, IAM GetAccountSummary) and recorded
 * Service Quotas documents (moto has no EC2 quotas), the classifier on real SDK error shapes (served in EC2's and
 * IAM's own XML by a local server: moto cannot throttle) and on engine output, and the backoff loop on a fake clock.
 */
import { expect } from "chai";
import { createServer, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { CreateRoleCommand, GetAccountSummaryCommand, IAMClient } from "@aws-sdk/client-iam";
import { DescribeImagesCommand, DescribeInstancesCommand, EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { startMoto, MotoServer } from "../sandbox/moto";
import { startFakeServiceQuotas, FakeServiceQuotas } from "../sandbox/fake-service-quotas";
import { checkJobFits, iamFigures, planConcurrency, quotaClassOf, vcpuFigures, withFits, type CapacityReport } from "../driver/quotas";
import { readCapacity } from "../driver/quota-reads";
import { awsRetryConfig, classifyAwsFailure, classifyEngineText, withAwsBackoff } from "../driver/backoff";
import { BadInputError, InfraError } from "../driver/errors";
import { explainEngineError } from "../driver/engine";
import { isRetryable } from "../driver/run";

/** Engine output of failed `up`s as the AWS provider (Terraform-based, SDK v2 for Go) words them. */
const ENGINE_CAPACITY = `Updating (job-NDARINV0000AAAA-20261129T102501123Z):
 +  aws:ec2:Instance job-NDARINV0000AAAA-20261129T102501123Z-instance creating (2s) error: 1 error occurred:
    * creating EC2 Instance: operation error EC2: RunInstances, https response error StatusCode: 500, RequestID: 4f9a2f0e-8c1d-4b6e-9a55-0d2c2f6f1e11, api error InsufficientInstanceCapacity: We currently do not have sufficient m5.4xlarge capacity in the Availability Zone you requested (us-east-1a). Our system will be working on provisioning additional capacity. You can currently get m5.4xlarge capacity by not specifying an Availability Zone in your request or choosing us-east-1b, us-east-1c, us-east-1d, us-east-1f.
error: update failed`;
const ENGINE_EC2_THROTTLED = `    * creating EC2 Instance: operation error EC2: RunInstances, failed to get rate limit token, retry quota exceeded, 0 available, 5 requested; https response error StatusCode: 503, RequestID: 1b0c, api error RequestLimitExceeded: Request limit exceeded.`;
const ENGINE_IAM_THROTTLED = `    * creating IAM Role (job-NDARINV0000AAAA-20261129T102501123Z-role-4b1e9a7): operation error IAM: CreateRole, exceeded maximum number of attempts, 25, https response error StatusCode: 400, RequestID: 7d3e, api error Throttling: Rate exceeded`;
const ENGINE_OTHER = `    * creating EC2 Instance: operation error EC2: RunInstances, https response error StatusCode: 400, RequestID: 9e1f, api error VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to.`;

describe("quota classes of instance types", () => {
  it("maps standard, accelerated and multi-letter families to their Service Quotas codes", () => {
    const codes = (type: string) => [quotaClassOf(type)?.onDemand, quotaClassOf(type)?.spot];
    expect(codes("m5.4xlarge")).to.deep.equal(["L-1216C47A", "L-34B43A08"]);
    for (const type of ["c7gn.large", "t3.medium", "r7iz.xlarge", "i4i.large", "im4gn.large", "d3en.xlarge", "z1d.large", "a1.medium", "h1.2xlarge"]) {
      expect(quotaClassOf(type)?.onDemand, type).to.equal("L-1216C47A");
    }
    expect(codes("g4dn.xlarge")).to.deep.equal(["L-DB2E81BA", "L-3819A6DF"]);
    expect(quotaClassOf("vt1.3xlarge")?.onDemand).to.equal("L-DB2E81BA");
    expect(quotaClassOf("p3.2xlarge")?.onDemand).to.equal("L-417A185B");
    expect(quotaClassOf("x2iedn.xlarge")?.onDemand).to.equal("L-7295265B");
    expect(quotaClassOf("f1.2xlarge")?.onDemand).to.equal("L-74FC7D96");
    // Prefixes that start like a standard family but are not one.
    expect(quotaClassOf("inf2.xlarge")?.onDemand).to.equal("L-1945791B");
    expect(quotaClassOf("dl1.24xlarge")?.onDemand).to.equal("L-6E869C2A");
    expect(quotaClassOf("trn1.2xlarge")?.onDemand).to.equal("L-2C3B7624");
    for (const type of ["u-6tb1.metal", "hpc6a.48xlarge", "mac1.metal"]) expect(quotaClassOf(type), type).to.equal(undefined);
  });
});

describe("quota arithmetic and the concurrency plan", () => {
  const standard = quotaClassOf("m5.4xlarge")!;
  const report = (quota: number, inUse: number, iam?: Record<string, number>): CapacityReport =>
    withFits({ checked: true, region: "us-east-1", instanceType: "m5.4xlarge", market: "on-demand", vcpus: vcpuFigures(standard, false, quota, inUse, 16), ...(iam ? { iam: iamFigures(iam) } : {}), unknown: [] });

  it("free vCPUs over vCPUs per job, rounded down; IAM roles and profiles left, the tighter of the two", () => {
    expect(report(64, 16).fitsJobs).to.equal(3);
    expect(report(64, 20).fitsJobs).to.equal(2);
    expect(report(32, 40).fitsJobs).to.equal(0); // over the quota (raised, then lowered): nothing fits, never negative
    const iam = { Roles: 998, RolesQuota: 1000, InstanceProfiles: 990, InstanceProfilesQuota: 1000 };
    expect(iamFigures(iam)).to.deep.equal({ roles: { used: 998, quota: 1000, left: 2 }, instanceProfiles: { used: 990, quota: 1000, left: 10 }, fitsJobs: 2 });
    expect(report(640, 0, iam).fitsJobs).to.equal(2);
    expect(() => iamFigures({ Roles: 3 })).to.throw(/RolesQuota/);
  });

  it("a default concurrency is capped and says so; an explicit one that cannot fit is refused with the numbers", () => {
    const r = report(64, 16);
    expect(planConcurrency(r, 4, false, 10)).to.deep.include({ concurrency: 3 });
    expect(planConcurrency(r, 4, false, 10).capped).to.equal(
      'concurrency capped to 3 (asked 4): EC2 quota "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" (L-1216C47A) in us-east-1 is 64 vCPUs, 16 in use, m5.4xlarge needs 16 per job: 3 job(s) fit',
    );
    expect(() => planConcurrency(r, 5, true, 10)).to.throw(BadInputError, /^--concurrency 5 cannot fit: .* is 64 vCPUs, 16 in use, m5\.4xlarge needs 16 per job: 3 job\(s\) fit\. Nothing was created; give --concurrency 3 or less/);
    // Only min(concurrency, jobs) run at once: two jobs under --concurrency 10 fit.
    expect(planConcurrency(r, 10, true, 2).concurrency).to.equal(10);
    expect(() => planConcurrency(report(32, 32), 4, false, 3)).to.throw(BadInputError, /no job of this batch fits .* 0 job\(s\) fit/);
    expect(() => checkJobFits(report(32, 20))).to.throw(BadInputError, /this job does not fit the account's quotas now: .* is 32 vCPUs, 20 in use, .*L-1216C47A/);
    checkJobFits(report(32, 16));
    // Unknown quotas never refuse.
    const unknown = withFits({ checked: true, unknown: ["EC2 vCPU quota ...: AccessDeniedException"] });
    expect(planConcurrency(unknown, 50, true, 100).concurrency).to.equal(50);
    checkJobFits(unknown);
  });
});

describe("quota reads against moto and recorded Service Quotas documents", function () {
  this.timeout(120_000);
  let moto: MotoServer;
  let quotas: FakeServiceQuotas;
  const saved: Record<string, string | undefined> = {};
  const setEnv = (env: Record<string, string>) => {
    for (const [k, v] of Object.entries(env)) {
      if (!(k in saved)) saved[k] = process.env[k];
      process.env[k] = v;
    }
  };

  before(async () => {
    moto = await startMoto();
    quotas = await startFakeServiceQuotas({ quotas: { "L-1216C47A": 64, "L-34B43A08": 8 } });
    setEnv({ ...moto.env, ...quotas.env });
    const ec2 = new EC2Client({ region: "us-east-1" });
    const image = (await ec2.send(new DescribeImagesCommand({}))).Images![0].ImageId!;
    // In use: 2 × m5.2xlarge (16 vCPUs) on-demand and a g4dn (another class), which must not count.
    await ec2.send(new RunInstancesCommand({ ImageId: image, InstanceType: "m5.2xlarge", MinCount: 2, MaxCount: 2 }));
    await ec2.send(new RunInstancesCommand({ ImageId: image, InstanceType: "g4dn.xlarge", MinCount: 1, MaxCount: 1 }));
    const iam = new IAMClient({ region: "us-east-1" });
    for (const name of ["a", "b", "c"]) await iam.send(new CreateRoleCommand({ RoleName: `existing-${name}`, AssumeRolePolicyDocument: "{}" }));
  });
  after(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await quotas?.stop();
    await moto?.stop();
  });

  it("on-demand: the quota from Service Quotas, vCPUs in use of the class from EC2, roles from IAM", async () => {
    const report = await readCapacity({ region: "us-east-1", instanceType: "m5.4xlarge", spot: false });
    expect(report.unknown).to.deep.equal([]);
    expect(report.vcpus).to.deep.equal({ quotaCode: "L-1216C47A", quotaName: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", quota: 64, inUse: 16, perJob: 16, fitsJobs: 3 });
    const summary = (await new IAMClient({ region: "us-east-1" }).send(new GetAccountSummaryCommand({}))).SummaryMap!;
    expect(report.iam?.roles).to.deep.equal({ used: summary.Roles, quota: 1000, left: 1000 - summary.Roles! });
    expect(summary.Roles).to.equal(3);
    expect(report.fitsJobs).to.equal(3);
    expect(quotas.requests).to.deep.include({ operation: "GetServiceQuota", quotaCode: "L-1216C47A" });
  });

  it("spot: the spot quota (L-34B43A08), on-demand instances not counted against it", async () => {
    const report = await readCapacity({ region: "us-east-1", instanceType: "m5.large", spot: true });
    expect(report.vcpus).to.deep.include({ quotaCode: "L-34B43A08", quota: 8, inUse: 0, perJob: 2, fitsJobs: 4 });
  });

  it("a quota the service does not know is unknown (a warning), not a refusal; the IAM figure still counts", async () => {
    const report = await readCapacity({ region: "us-east-1", instanceType: "g4dn.xlarge", spot: false });
    expect(report.vcpus).to.equal(undefined);
    expect(report.unknown.join("\n")).to.match(/EC2 vCPU quota "Running On-Demand G and VT instances" \(L-DB2E81BA\) in us-east-1: NoSuchResourceException/);
    expect(report.fitsJobs).to.equal(997);
    const other = await readCapacity({ region: "us-east-1", instanceType: "u-6tb1.metal", spot: false });
    expect(other.unknown.join("\n")).to.match(/u-6tb1\.metal: its family has a quota this driver does not read/);
  });

  it("an unreachable API is unknown within the time bound", async () => {
    setEnv({ AWS_ENDPOINT_URL_SERVICE_QUOTAS: "http://127.0.0.1:1" });
    try {
      const report = await readCapacity({ region: "us-east-1", instanceType: "m5.4xlarge", spot: false }, 5000);
      expect(report.vcpus).to.equal(undefined);
      expect(report.unknown.join("\n")).to.match(/L-1216C47A.*ECONNREFUSED|L-1216C47A.*connect/);
    } finally {
      setEnv(quotas.env);
    }
  });
});

/** A local endpoint answering the first `failures` requests with AWS's own error document, then `success`. */
async function erroringEndpoint(failures: number, error: { status: number; body: string }, success: string): Promise<{ url: string; count: () => number; server: Server }> {
  let count = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      count++;
      res.writeHead(count <= failures ? error.status : 200, { "content-type": "text/xml" });
      res.end(count <= failures ? error.body : success);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, count: () => count, server };
}

const EC2_ERROR = (code: string, message: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code><Message>${message}</Message></Error></Errors><RequestID>5a8b2e34-0c3d-4f0e-b1f7-3a2f8c9d0e11</RequestID></Response>`;
const IAM_THROTTLING = `<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>7d3e5c1a-2b4f-4e6a-9c8d-1f0e2d3c4b5a</RequestId></ErrorResponse>`;
const EC2_EMPTY = `<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet/></DescribeInstancesResponse>`;
const IAM_SUMMARY = `<GetAccountSummaryResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetAccountSummaryResult><SummaryMap><entry><key>Roles</key><value>5</value></entry></SummaryMap></GetAccountSummaryResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetAccountSummaryResponse>`;

describe("classifying throttling and capacity failures", function () {
  this.timeout(60_000);
  const creds = { accessKeyId: "testing", secretAccessKey: "testing" };

  it("SDK errors in EC2's and IAM's own shapes: RequestLimitExceeded, InsufficientInstanceCapacity, Throttling", async () => {
    const cases: Array<[string, { status: number; body: string }, "ec2" | "iam", string]> = [
      ["throttled", { status: 503, body: EC2_ERROR("RequestLimitExceeded", "Request limit exceeded.") }, "ec2", "RequestLimitExceeded"],
      ["capacity", { status: 500, body: EC2_ERROR("InsufficientInstanceCapacity", "We currently do not have sufficient m5.4xlarge capacity in the Availability Zone you requested (us-east-1a).") }, "ec2", "InsufficientInstanceCapacity"],
      ["throttled", { status: 400, body: IAM_THROTTLING }, "iam", "Throttling"],
    ];
    for (const [kind, error, service, name] of cases) {
      const ep = await erroringEndpoint(100, error, "");
      try {
        const call = service === "ec2"
          ? new EC2Client({ region: "us-east-1", endpoint: ep.url, credentials: creds, maxAttempts: 1 }).send(new DescribeInstancesCommand({}))
          : new IAMClient({ region: "us-east-1", endpoint: ep.url, credentials: creds, maxAttempts: 1 }).send(new GetAccountSummaryCommand({}));
        const err = await call.then(() => undefined, (e: unknown) => e);
        expect((err as Error).name).to.equal(name);
        expect(classifyAwsFailure(err), name).to.equal(kind);
      } finally {
        ep.server.close();
      }
    }
    expect(classifyAwsFailure(Object.assign(new Error("Access Denied"), { name: "AccessDenied" }))).to.equal(undefined);
  });

  it("the driver's clients ride out throttling themselves: two RequestLimitExceeded, then the answer", async () => {
    const ep = await erroringEndpoint(2, { status: 503, body: EC2_ERROR("RequestLimitExceeded", "Request limit exceeded.") }, EC2_EMPTY);
    try {
      const res = await new EC2Client({ region: "us-east-1", endpoint: ep.url, credentials: creds, ...awsRetryConfig }).send(new DescribeInstancesCommand({}));
      expect(res.Reservations ?? []).to.deep.equal([]);
      expect(ep.count()).to.equal(3);
    } finally {
      ep.server.close();
    }
    const iam = await erroringEndpoint(1, { status: 400, body: IAM_THROTTLING }, IAM_SUMMARY);
    try {
      const res = await new IAMClient({ region: "us-east-1", endpoint: iam.url, credentials: creds, ...awsRetryConfig }).send(new GetAccountSummaryCommand({}));
      expect(res.SummaryMap?.Roles).to.equal(5);
      expect(iam.count()).to.equal(2);
    } finally {
      iam.server.close();
    }
  });

  it("engine output of a failed up: capacity, EC2 and IAM throttling; other failures are not retried", () => {
    expect(classifyEngineText(ENGINE_CAPACITY)).to.equal("capacity");
    expect(classifyEngineText(ENGINE_EC2_THROTTLED)).to.equal("throttled");
    expect(classifyEngineText(ENGINE_IAM_THROTTLED)).to.equal("throttled");
    expect(classifyEngineText(ENGINE_OTHER)).to.equal(undefined);
    expect(classifyEngineText("error: the stack's secrets could not be decrypted: passphrase")).to.equal(undefined);
    expect(classifyAwsFailure(new Error(`CommandError: code: 255\n stdout: ${ENGINE_CAPACITY}`))).to.equal("capacity");
  });

  it("capacity waited for in vain is worth a fresh launch (--retries); a quota used up meanwhile is explained", () => {
    expect(isRetryable({ reason: "insufficient-capacity", message: "" })).to.equal(true);
    expect(isRetryable({ reason: "up-failed", message: "" })).to.equal(false);
    const explained = explainEngineError(new Error(ENGINE_OTHER), "job-NDARINV0000AAAA-20261129T102501123Z");
    expect(explained).to.be.instanceOf(InfraError);
    expect(explained.message).to.match(/^EC2 refused job job-NDARINV0000AAAA-20261129T102501123Z's instance: the account's vCPU quota for its class is used up \(VcpuLimitExceeded\)/);
  });
});

describe("the backoff loop (fake clock)", () => {
  const policy = { attempts: 5, baseDelayMs: 20_000, maxDelayMs: 300_000, maxTotalMs: 20 * 60_000 };
  const fakeClock = () => {
    let t = 0;
    const slept: number[] = [];
    return { now: () => t, sleep: async (ms: number) => { slept.push(ms); t += ms; }, slept };
  };

  it("retries capacity and throttling with growing, jittered waits, says so each time, then succeeds", async () => {
    const clock = fakeClock();
    const lines: string[] = [];
    const failures = [ENGINE_CAPACITY, ENGINE_EC2_THROTTLED, ENGINE_IAM_THROTTLED];
    const result = await withAwsBackoff("up", async (attempt) => {
      if (attempt <= failures.length) throw new Error(failures[attempt - 1]);
      return "up";
    }, { policy, log: (l) => lines.push(l), now: clock.now, sleep: clock.sleep, random: () => 1 });
    expect(result).to.equal("up");
    expect(clock.slept).to.deep.equal([20_000, 40_000, 80_000]);
    expect(lines[0]).to.equal("up: EC2 has no capacity for the instance type right now (InsufficientInstanceCapacity); attempt 1 of at most 5 failed, trying again in 20 s (backoff with jitter, at most 20 min in all)");
    expect(lines[1]).to.match(/^up: AWS is throttling requests .*attempt 2 of at most 5 failed, trying again in 40 s/);
  });

  it("gives up after the attempts, or when the next wait would pass the total bound, with the last error", async () => {
    const clock = fakeClock();
    const err = await withAwsBackoff("up", async () => { throw new Error(ENGINE_CAPACITY); }, { policy, log: () => undefined, now: clock.now, sleep: clock.sleep, random: () => 1 }).catch((e: Error) => e);
    expect((err as Error).message).to.include("InsufficientInstanceCapacity");
    expect(clock.slept).to.deep.equal([20_000, 40_000, 80_000, 160_000]);
    const short = fakeClock();
    await withAwsBackoff("up", async () => { throw new Error(ENGINE_CAPACITY); }, { policy: { ...policy, maxTotalMs: 100_000 }, log: () => undefined, now: short.now, sleep: short.sleep, random: () => 1 }).catch(() => undefined);
    expect(short.slept).to.deep.equal([20_000, 40_000]); // 60 s + 80 s would pass 100 s
  });

  it("does not retry what waiting cannot fix, nor capacity where only throttling is asked for (destroy)", async () => {
    let calls = 0;
    const clock = fakeClock();
    await withAwsBackoff("up", async () => { calls++; throw new Error(ENGINE_OTHER); }, { policy, log: () => undefined, now: clock.now, sleep: clock.sleep }).catch(() => undefined);
    expect(calls).to.equal(1);
    calls = 0;
    await withAwsBackoff("destroy", async () => { calls++; throw new Error(ENGINE_CAPACITY); }, { policy, kinds: ["throttled"], log: () => undefined, now: clock.now, sleep: clock.sleep }).catch(() => undefined);
    expect(calls).to.equal(1);
  });

  it("an abort during a wait ends the loop at once", async () => {
    const controller = new AbortController();
    let calls = 0;
    const err = await withAwsBackoff("up", async () => { calls++; controller.abort(); throw new Error(ENGINE_CAPACITY); }, { policy, signal: controller.signal, log: () => undefined }).catch((e: Error) => e);
    expect(calls).to.equal(1);
    expect((err as Error).message).to.include("InsufficientInstanceCapacity");
  });
});
