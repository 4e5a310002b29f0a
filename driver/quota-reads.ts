/**
 * Reads the figures driver/quotas.ts weighs: Service Quotas (GetServiceQuota, falling back to the AWS default),
 * EC2 DescribeInstanceTypes and DescribeInstances (vCPUs of the class in use), IAM GetAccountSummary. Each read that
 * fails (no permission, API unreachable) becomes an `unknown` line: a warning, never a refusal. Bounded in time.
 */
import { errorMessage } from "../common/errors";
import type { ResolvedJob } from "./options";
import { CapacityReport, iamFigures, LOCAL_REPORT, QuotaClass, quotaClassOf, quotaName, vcpuFigures, withFits } from "./quotas";

/** The longest the whole read may take: a dry run or a launch must not hang on an unreachable API. */
const READ_TIMEOUT_MS = Number(process.env.CLOUDCOMPUTE_QUOTA_TIMEOUT_MS ?? 10_000);
/** Advisory reads: a few throttling retries (adaptive mode), not the launch path's patience. */
const awsRetryConfig = { maxAttempts: 3, retryMode: "adaptive" } as const;

export interface CapacityTarget {
  region: string;
  instanceType: string;
  spot: boolean;
}

/** The capacity report of a job's platform: the local platform has no quotas. */
export async function capacityFor(resolved: ResolvedJob): Promise<CapacityReport> {
  if (resolved.platform !== "aws") return LOCAL_REPORT;
  const { region, type, spot } = resolved.spec.instance;
  return readCapacity({ region, instanceType: type, spot });
}

function why(err: unknown): string {
  const e = err as { name?: string };
  // An S3-only endpoint (AWS_ENDPOINT_URL) answers with a web page: say that, not the parser's complaint.
  if (e?.name === "SyntaxError") return "the endpoint's answer is not the AWS API's (is AWS_ENDPOINT_URL an S3-only server?)";
  const name = e?.name && e.name !== "Error" ? `${e.name}: ` : "";
  return `${name}${errorMessage(err).split("\n")[0]}`.slice(0, 300);
}

export async function readCapacity(target: CapacityTarget, timeoutMs = READ_TIMEOUT_MS): Promise<CapacityReport> {
  const abortSignal = AbortSignal.timeout(timeoutMs);
  const unknown: string[] = [];
  const cls = quotaClassOf(target.instanceType);
  const market = target.spot ? "spot" : "on-demand";
  const base = { checked: true, region: target.region, instanceType: target.instanceType, market } as const;
  const [vcpus, iam] = await Promise.all([
    cls
      ? readVcpus(cls, target, abortSignal).catch((err) => {
          unknown.push(`EC2 vCPU quota "${quotaName(cls, target.spot)}" (${target.spot ? cls.spot : cls.onDemand}) in ${target.region}: ${why(err)}`);
          return undefined;
        })
      : (unknown.push(`EC2 vCPU quota of ${target.instanceType}: its family has a quota this driver does not read`), undefined),
    readIam(target.region, abortSignal).catch((err) => {
      unknown.push(`IAM roles and instance profiles (iam:GetAccountSummary): ${why(err)}`);
      return undefined;
    }),
  ]);
  return withFits({ ...base, ...(vcpus ? { vcpus } : {}), ...(iam ? { iam } : {}), unknown });
}

type Send = { abortSignal: AbortSignal };

async function readVcpus(cls: QuotaClass, target: CapacityTarget, abortSignal: AbortSignal) {
  const { EC2Client, DescribeInstanceTypesCommand, DescribeInstancesCommand } = require("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
  const ec2 = new EC2Client({ region: target.region, ...awsRetryConfig });
  const opts: Send = { abortSignal };
  const vcpusOf = async (types: string[]): Promise<Map<string, number>> => {
    const found = new Map<string, number>();
    for (let i = 0; i < types.length; i += 100) {
      const res = await ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: types.slice(i, i + 100) as never[] }), opts);
      for (const t of res.InstanceTypes ?? []) if (t.InstanceType && t.VCpuInfo?.DefaultVCpus) found.set(t.InstanceType, t.VCpuInfo.DefaultVCpus);
    }
    return found;
  };
  const perJob = (await vcpusOf([target.instanceType])).get(target.instanceType);
  if (!perJob) throw new Error(`DescribeInstanceTypes gave no vCPU count for ${target.instanceType}`);
  const quota = await readQuota(target.region, target.spot ? cls.spot : cls.onDemand, abortSignal);

  // In use: running and pending instances of the class in this market; their vCPUs by type.
  const byType = new Map<string, number>();
  let token: string | undefined;
  do {
    const res = await ec2.send(
      new DescribeInstancesCommand({ Filters: [{ Name: "instance-state-name", Values: ["pending", "running"] }], NextToken: token }),
      opts,
    );
    for (const instance of (res.Reservations ?? []).flatMap((r) => r.Instances ?? [])) {
      const type = instance.InstanceType;
      if (!type || quotaClassOf(type) !== cls || (instance.InstanceLifecycle === "spot") !== target.spot) continue;
      byType.set(type, (byType.get(type) ?? 0) + 1);
    }
    token = res.NextToken;
  } while (token);
  const known = await vcpusOf([...byType.keys()]);
  let inUse = 0;
  for (const [type, count] of byType) {
    const each = known.get(type);
    if (each === undefined) throw new Error(`DescribeInstanceTypes gave no vCPU count for running type ${type}`);
    inUse += each * count;
  }
  return vcpuFigures(cls, target.spot, quota, inUse, perJob);
}

/** The applied quota; a quota never raised may be answered only by the AWS default. */
async function readQuota(region: string, quotaCode: string, abortSignal: AbortSignal): Promise<number> {
  const sdk = require("@aws-sdk/client-service-quotas") as typeof import("@aws-sdk/client-service-quotas");
  const client = new sdk.ServiceQuotasClient({ region, ...awsRetryConfig });
  let value: number | undefined;
  try {
    value = (await client.send(new sdk.GetServiceQuotaCommand({ ServiceCode: "ec2", QuotaCode: quotaCode }), { abortSignal })).Quota?.Value;
  } catch (err) {
    if ((err as { name?: string }).name !== "NoSuchResourceException") throw err;
    value = (await client.send(new sdk.GetAWSDefaultServiceQuotaCommand({ ServiceCode: "ec2", QuotaCode: quotaCode }), { abortSignal })).Quota?.Value;
  }
  if (typeof value !== "number") throw new Error(`Service Quotas gave no value for ${quotaCode}`);
  return value;
}

async function readIam(region: string, abortSignal: AbortSignal) {
  const { IAMClient, GetAccountSummaryCommand } = require("@aws-sdk/client-iam") as typeof import("@aws-sdk/client-iam");
  const iam = new IAMClient({ region, ...awsRetryConfig });
  const res = await iam.send(new GetAccountSummaryCommand({}), { abortSignal });
  return iamFigures(res.SummaryMap ?? {});
}
