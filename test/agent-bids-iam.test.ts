/**
 * Layout bids under the job role's policy, IAM enforced (moto, as test/agent-iam.test.ts): the role may create the
 * prefix's dataset_description.json and no other key at the prefix level. IAM cannot say "create, never overwrite";
 * the agent's conditional create (If-None-Match) does, and S3 refuses it with 412 once the file exists.
 */
import { expect } from "chai";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateAccessKeyCommand, CreateRoleCommand, CreateUserCommand, IAMClient, PutRolePolicyCommand, PutUserPolicyCommand } from "@aws-sdk/client-iam";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { AssumeRoleCommand, STSClient } from "@aws-sdk/client-sts";
import { ensureDatasetDescription } from "../agent/dataset-description";
import { runAgentJob } from "../agent/run";
import { datasetDescription } from "../job/bids";
import { withAgent } from "../infra/index";
import { jobPolicyDocument } from "../infra/policy";
import { jobLayout } from "../job/layout";
import { parseJobSpec } from "../job/spec";
import { makeAbcdArchive } from "./support/fixtures";
import { startMoto, type MotoServer } from "../sandbox/moto";

const BUCKET = "cc-iam-bids";
const SUBJECT = "NDARINV0000AAAA";
/** Setup calls made without credentials; moto enforces IAM from the next one on. */
const SETUP_CALLS = 8;

describe("layout bids under the job role's policy, IAM enforced (moto)", function () {
  this.timeout(120_000);
  let moto: MotoServer;
  let role: S3Client;
  let admin: S3Client;
  const dir = mkdtempSync(path.join(tmpdir(), "cc-iam-bids-"));
  const bundle = { path: "/nonexistent/agent.js", sha256: createHash("sha256").update("agent").digest("hex") };
  const spec = withAgent(
    parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: "job-iam-bids-1",
      launchId: "launch-iam-bids-1",
      subject: SUBJECT,
      inputs: [{ name: "t1", url: `s3://${BUCKET}/abcd/${SUBJECT}.tgz`, select: "**/*_T1w.nii" }],
      container: { image: "none", runtime: "none", command: ["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"] },
      outputs: { prefix: `s3://${BUCKET}/results`, layout: "bids" },
      instance: { type: "m5.large", region: "us-east-1" },
    }),
    bundle,
  );
  const layout = jobLayout(spec);
  const status = async (call: Promise<unknown>): Promise<number> => {
    try {
      await call;
      return 200;
    } catch (err) {
      return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
    }
  };
  const read = async (key: string) => (await (await admin.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToString());

  before(async () => {
    moto = await startMoto({ INITIAL_NO_AUTH_ACTION_COUNT: String(SETUP_CALLS) });
    const config = { endpoint: moto.endpoint, region: "us-east-1", credentials: { accessKeyId: "testing", secretAccessKey: "testing" } };
    const s3 = new S3Client({ ...config, forcePathStyle: true, maxAttempts: 1 });
    const iam = new IAMClient({ ...config, maxAttempts: 1 });
    // 1-3: the data.
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `abcd/${SUBJECT}.tgz`, Body: (await makeAbcdArchive(SUBJECT)).tgz }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: new URL(spec.agent!.url.replace("s3://", "http://")).pathname.slice(1), Body: "agent" }));
    // 4-5: the job role with exactly the policy the stack program declares.
    const created = await iam.send(new CreateRoleCommand({ RoleName: "cc-job-iam-bids", AssumeRolePolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { AWS: "*" }, Action: "sts:AssumeRole" }] }) }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "cc-job-iam-bids", PolicyName: "job", PolicyDocument: JSON.stringify(jobPolicyDocument(spec)) }));
    // 6-8: the lab's admin: assumes the role (EC2 does that for the instance) and reads what the job wrote.
    await iam.send(new CreateUserCommand({ UserName: "admin" }));
    await iam.send(new PutUserPolicyCommand({ UserName: "admin", PolicyName: "all", PolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: ["sts:AssumeRole", "s3:*"], Resource: "*" }] }) }));
    const key = await iam.send(new CreateAccessKeyCommand({ UserName: "admin" }));
    const adminCredentials = { accessKeyId: key.AccessKey!.AccessKeyId!, secretAccessKey: key.AccessKey!.SecretAccessKey! };
    admin = new S3Client({ endpoint: moto.endpoint, region: "us-east-1", forcePathStyle: true, maxAttempts: 1, credentials: adminCredentials });
    const sts = new STSClient({ endpoint: moto.endpoint, region: "us-east-1", credentials: adminCredentials });
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

  it("the policy adds exactly one key at the prefix level: dataset_description.json, PutObject only", () => {
    const statement = jobPolicyDocument(spec).Statement.find((s) => s.Sid === "CreateDatasetDescription");
    expect(statement).to.deep.include({ Action: ["s3:PutObject"], Resource: [`arn:aws:s3:::${BUCKET}/results/dataset_description.json`] });
    const plain = withAgent(parseJobSpec({ ...spec, outputs: { prefix: spec.outputs.prefix } }), bundle);
    expect(JSON.stringify(jobPolicyDocument(plain))).not.to.include("dataset_description");
  });

  it("runs a whole job with the role's credentials: results under sub-<label>/ and the description created", async () => {
    const { marker } = await runAgentJob(spec, { workdir: dir, client: role, statusIntervalMs: 500, logIntervalMs: 1000 });
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect(marker.outputs.prefix).to.equal(`s3://${BUCKET}/results/sub-${SUBJECT}/`);
    expect(layout.results.key).to.equal(`results/sub-${SUBJECT}/`);
    expect(JSON.parse(await read("results/dataset_description.json"))).to.include({ DatasetType: "derivative" });
    expect(await read(layout.log.key)).to.include("wrote s3://cc-iam-bids/results/dataset_description.json");
  });

  it("the role's create of an existing description is refused by S3 (412, not by IAM) and the file stays", async () => {
    const before = await read("results/dataset_description.json");
    const lines: string[] = [];
    const outcome = await ensureDatasetDescription(role, layout.datasetDescription!, datasetDescription({ runtime: "docker", reference: "evil/image:1" }, "dev"), (line) => lines.push(line));
    expect(outcome).to.equal("kept");
    expect(await status(role.send(new PutObjectCommand({ Bucket: BUCKET, Key: "results/dataset_description.json", Body: "{}", IfNoneMatch: "*" })))).to.equal(412);
    expect(await read("results/dataset_description.json")).to.equal(before);
  });

  it("denies the role every other key at the prefix level, and the folder the other layout would use", async () => {
    for (const key of ["results/README", "results/participants.tsv", "results/dataset_description.json.bak", "results/CHANGES", `results/${SUBJECT}/x.txt`, "results/sub-NDARINV0000BBBB/x.txt"]) {
      expect(await status(role.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: "x" }))), key).to.equal(403);
    }
    expect(await status(role.send(new GetObjectCommand({ Bucket: BUCKET, Key: "results/dataset_description.json" }))), "no read either").to.equal(403);
  });
});
