/**
 * The must-show "quota caps against moto, with the message a user sees" for `npm run bench -- scale`: a driver
 * sandbox (moto: EC2 instances in use, IAM) with recorded Service Quotas documents (moto has no EC2 quotas), then
 * the real CLI twice — a batch whose default concurrency is capped, and an explicit --concurrency that is refused.
 * Run alone: `npx tsx bench/quotas.ts` prints the JSON.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DescribeImagesCommand, EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { startFakeServiceQuotas } from "../sandbox/fake-service-quotas";

export interface QuotaCapsFigure {
  /** Where the figures came from. */
  source: string;
  quota_vcpus: number;
  in_use_vcpus: number;
  per_job_vcpus: number;
  fits_jobs: number;
  /** The default concurrency (4) capped: the plan and the line the user sees. */
  capped_concurrency: number;
  capped_message: string;
  /** An explicit --concurrency 5: the exit code (2) and the error the user sees. */
  refused_exit: number | null;
  refused_message: string;
}

export async function quotaCapsFigure(): Promise<QuotaCapsFigure> {
  const quotas = await startFakeServiceQuotas({ quotas: { "L-1216C47A": 64 } });
  const sandbox = await startDriverSandbox(quotas.env);
  try {
    const ec2 = new EC2Client({ region: "us-east-1", endpoint: sandbox.moto.endpoint, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
    const image = (await ec2.send(new DescribeImagesCommand({}))).Images![0].ImageId!;
    await ec2.send(new RunInstancesCommand({ ImageId: image, InstanceType: "m5.2xlarge", MinCount: 2, MaxCount: 2 }));
    const config = sandbox.writeConfig("quotas.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }));
    const subjects = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(subjects, ["NDARINV0000AAAA", "NDARINV0000BBBB", "NDARINV0000CCCC", "NDARINV0000DDDD", "NDARINV0000EEEE"].join("\n") + "\n");
    const aws = ["--config", config, "--subjects-file", subjects, "--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu", "--instance-type", "m5.4xlarge"];
    const capped = await sandbox.run([...aws, "--dry-run", "--json"]);
    if (capped.code !== 0) throw new Error(`the capped dry run failed (${capped.code}): ${capped.stderr}`);
    const shown = JSON.parse(capped.stdout).quotas;
    const refused = await sandbox.run([...aws, "--concurrency", "5"]);
    return {
      source: "moto 5.2.1 (EC2 instances and types, IAM GetAccountSummary) + recorded Service Quotas GetServiceQuota documents",
      quota_vcpus: shown.vcpus.quota,
      in_use_vcpus: shown.vcpus.inUse,
      per_job_vcpus: shown.vcpus.perJob,
      fits_jobs: shown.fitsJobs,
      capped_concurrency: shown.plan.concurrency,
      capped_message: capped.stderr.split("\n").find((l) => l.includes("concurrency capped")) ?? "",
      refused_exit: refused.code,
      refused_message: refused.stderr.split("\n").find((l) => l.startsWith("error:")) ?? refused.stderr.trim(),
    };
  } finally {
    await sandbox.stop();
    await quotas.stop();
  }
}

if (require.main === module) {
  quotaCapsFigure().then(
    (figure) => process.stdout.write(JSON.stringify(figure, null, 2) + "\n"),
    (err: Error) => {
      process.stderr.write(`${err.stack}\n`);
      process.exitCode = 1;
    },
  );
}
