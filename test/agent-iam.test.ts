/**
 * The job role's policy, enforced: moto with IAM authorization on (INITIAL_NO_AUTH_ACTION_COUNT covers exactly the
 * setup calls), the role created from the policy the stack program declares (infra/policy.ts), and the agent running a
 * whole job — role-read input, multipart outputs, promotion into the results, provenance, marker — with the assumed
 * role's credentials. The same credentials are then denied another subject's input, writes outside the job's
 * prefixes, the agent bundle and listings.
 */
import { expect } from "chai";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateAccessKeyCommand, CreateRoleCommand, CreateUserCommand, IAMClient, PutRolePolicyCommand, PutUserPolicyCommand } from "@aws-sdk/client-iam";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { AssumeRoleCommand, STSClient } from "@aws-sdk/client-sts";
import { runAgentJob } from "../agent/run";
import { withAgent } from "../infra/index";
import { jobPolicyDocument } from "../infra/policy";
import { jobLayout } from "../job/layout";
import { parseJobSpec } from "../job/spec";
import { makeAbcdArchive } from "./support/fixtures";
import { startMoto, type MotoServer } from "../sandbox/moto";

const BUCKET = "cc-iam-study";
const SUBJECT = "NDARINV0000AAAA";
const OTHER = "NDARINV0000BBBB";
/** Setup calls made without credentials; moto enforces IAM from the next one on. */
const SETUP_CALLS = 9;

describe("agent under the job role's policy, IAM enforced (moto)", function () {
  this.timeout(120_000);
  let moto: MotoServer;
  let role: S3Client;
  const dir = mkdtempSync(path.join(tmpdir(), "cc-iam-"));
  const bundle = { path: "/nonexistent/agent.js", sha256: createHash("sha256").update("agent").digest("hex") };
  const spec = withAgent(
    parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: "job-iam-1",
      launchId: "launch-iam-test-1",
      subject: SUBJECT,
      inputs: [{ name: "t1", url: `s3://${BUCKET}/abcd/${SUBJECT}.tgz`, select: "**/*_T1w.nii" }],
      container: { image: "none", runtime: "none", command: ["sh", "-c", 'dd if=/dev/zero of="$2/big.bin" bs=1048576 count=12 2>/dev/null && cp "$1" "$2/"', "sh", "{input}", "{output}"] },
      outputs: { prefix: `s3://${BUCKET}/results` },
      instance: { type: "m5.large", region: "us-east-1" },
    }),
    bundle,
  );
  const layout = jobLayout(spec);
  const denied = async (call: Promise<unknown>) => {
    try {
      await call;
    } catch (err) {
      return (err as { name?: string; $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 403;
    }
    return false;
  };

  before(async () => {
    moto = await startMoto({ INITIAL_NO_AUTH_ACTION_COUNT: String(SETUP_CALLS) });
    const config = { endpoint: moto.endpoint, region: "us-east-1", credentials: { accessKeyId: "testing", secretAccessKey: "testing" } };
    const s3 = new S3Client({ ...config, forcePathStyle: true, maxAttempts: 1 });
    const iam = new IAMClient({ ...config, maxAttempts: 1 });
    // 1-4: the data, as the lab's bucket holds it.
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `abcd/${SUBJECT}.tgz`, Body: (await makeAbcdArchive(SUBJECT)).tgz }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `abcd/${OTHER}.tgz`, Body: (await makeAbcdArchive(OTHER)).tgz }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: new URL(spec.agent!.url.replace("s3://", "http://")).pathname.slice(1), Body: "agent" }));
    // 5-6: the job role with exactly the policy the stack program declares.
    const created = await iam.send(new CreateRoleCommand({ RoleName: "cc-job-iam-1", AssumeRolePolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { AWS: "*" }, Action: "sts:AssumeRole" }] }) }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "cc-job-iam-1", PolicyName: "job", PolicyDocument: JSON.stringify(jobPolicyDocument(spec)) }));
    // 7-9: somebody allowed to assume it (EC2 does this for the instance).
    await iam.send(new CreateUserCommand({ UserName: "launcher" }));
    await iam.send(new PutUserPolicyCommand({ UserName: "launcher", PolicyName: "assume", PolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" }] }) }));
    const key = await iam.send(new CreateAccessKeyCommand({ UserName: "launcher" }));
    const sts = new STSClient({ endpoint: moto.endpoint, region: "us-east-1", credentials: { accessKeyId: key.AccessKey!.AccessKeyId!, secretAccessKey: key.AccessKey!.SecretAccessKey! } });
    const assumed = await sts.send(new AssumeRoleCommand({ RoleArn: created.Role!.Arn!, RoleSessionName: "instance" }));
    role = new S3Client({
      endpoint: moto.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: assumed.Credentials!.AccessKeyId!, secretAccessKey: assumed.Credentials!.SecretAccessKey!, sessionToken: assumed.Credentials!.SessionToken! },
    });
  });
  after(async () => {
    await moto?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("IAM is really enforced: the old root credentials are refused now", async () => {
    const root = new S3Client({ endpoint: moto.endpoint, region: "us-east-1", forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
    expect(await denied(root.send(new GetObjectCommand({ Bucket: BUCKET, Key: `abcd/${SUBJECT}.tgz` })))).to.equal(true);
  });

  it("runs a whole job with the role's credentials: input, multipart outputs, promotion, provenance, marker", async () => {
    const { marker } = await runAgentJob(spec, { workdir: dir, client: role, statusIntervalMs: 500, logIntervalMs: 1000, upload: { partSize: 5 * 1024 * 1024 } });
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect(marker.outputs.prefix).to.equal(`s3://${BUCKET}/${layout.results.key}`);
    expect(marker.outputs.count).to.equal(2);
    expect(marker.outputs.bytes).to.be.greaterThan(12 * 1024 * 1024);
  });

  it("denies the role another subject's input, writes outside its prefixes, the agent bundle and listings", async () => {
    expect(await denied(role.send(new GetObjectCommand({ Bucket: BUCKET, Key: `abcd/${OTHER}.tgz` }))), "another subject's input").to.equal(true);
    expect(await denied(role.send(new PutObjectCommand({ Bucket: BUCKET, Key: `results/${OTHER}/forged.txt`, Body: "x" }))), "another subject's results").to.equal(true);
    expect(await denied(role.send(new PutObjectCommand({ Bucket: BUCKET, Key: "results/_cloudcompute/job-other/marker.json", Body: "{}" }))), "another job's marker").to.equal(true);
    const agentKey = new URL(spec.agent!.url.replace("s3://", "http://")).pathname.slice(1);
    expect(await denied(role.send(new PutObjectCommand({ Bucket: BUCKET, Key: agentKey, Body: "evil" }))), "the agent bundle").to.equal(true);
    expect(await denied(role.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: "results/" }))), "a listing").to.equal(true);
  });
});
