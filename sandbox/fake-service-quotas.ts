/**
 * Service Quotas for EC2 as AWS answers it, for tests and benchmarks: moto 5.2.1 has the service but no EC2 quotas
 * ("This service is not available in the current Region"), so this tiny server speaks the Service Quotas JSON
 * protocol (awsJson1_1, `X-Amz-Target: ServiceQuotasV20190624.<Operation>`) with documents written from AWS's
 * documented GetServiceQuota response. Point the SDK at it with AWS_ENDPOINT_URL_SERVICE_QUOTAS (the rest stays on moto).
 */
import { createServer, IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

const NAMES: Record<string, string> = {
  "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
  "L-34B43A08": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
  "L-DB2E81BA": "Running On-Demand G and VT instances",
  "L-3819A6DF": "All G and VT Spot Instance Requests",
};

/** A recorded GetServiceQuota answer for an EC2 vCPU quota (the fields AWS documents; values ours). */
export function recordedQuotaDocument(quotaCode: string, value: number, region = "us-east-1"): Record<string, unknown> {
  return {
    Quota: {
      ServiceCode: "ec2",
      ServiceName: "Amazon Elastic Compute Cloud (Amazon EC2)",
      QuotaArn: `arn:aws:servicequotas:${region}:123456789012:ec2/${quotaCode}`,
      QuotaCode: quotaCode,
      QuotaName: NAMES[quotaCode] ?? quotaCode,
      Value: value,
      Unit: "None",
      Adjustable: true,
      GlobalQuota: false,
      UsageMetric: {
        MetricNamespace: "AWS/Usage",
        MetricName: "ResourceCount",
        MetricDimensions: { Class: "Standard/OnDemand", Resource: "vCPU", Service: "EC2", Type: "Resource" },
        MetricStatisticRecommendation: "Maximum",
      },
      QuotaAppliedAtLevel: "ACCOUNT",
    },
  };
}

export interface FakeServiceQuotas {
  endpoint: string;
  /** AWS_ENDPOINT_URL_SERVICE_QUOTAS for the driver's environment. */
  env: Record<string, string>;
  /** Each request's operation and quota code, in order. */
  requests: Array<{ operation: string; quotaCode?: string }>;
  stop(): Promise<void>;
}

export interface FakeServiceQuotasOptions {
  /** Applied quota values by code; a code not here answers NoSuchResourceException (as AWS does for unknown codes). */
  quotas: Record<string, number>;
  /** Answer every call with AccessDeniedException (a user without servicequotas:GetServiceQuota). */
  deny?: boolean;
}

export async function startFakeServiceQuotas(options: FakeServiceQuotasOptions): Promise<FakeServiceQuotas> {
  const requests: FakeServiceQuotas["requests"] = [];
  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "00000000-0000-0000-0000-000000000000" });
    res.end(JSON.stringify(body));
  };
  const handle = (req: IncomingMessage, res: ServerResponse, body: string) => {
    const operation = String(req.headers["x-amz-target"] ?? "").replace(/^ServiceQuotasV20190624\./, "");
    const input = JSON.parse(body || "{}") as { ServiceCode?: string; QuotaCode?: string };
    requests.push({ operation, quotaCode: input.QuotaCode });
    if (options.deny) {
      return send(res, 400, { __type: "AccessDeniedException", Message: `User: arn:aws:iam::123456789012:user/analyst is not authorized to perform: servicequotas:${operation}` });
    }
    if (operation !== "GetServiceQuota" && operation !== "GetAWSDefaultServiceQuota") return send(res, 400, { __type: "InvalidParameterValueException", Message: `not served here: ${operation}` });
    const value = input.ServiceCode === "ec2" && input.QuotaCode ? options.quotas[input.QuotaCode] : undefined;
    if (value === undefined) return send(res, 400, { __type: "NoSuchResourceException", Message: "The request failed because the specified service does not exist." });
    send(res, 200, recordedQuotaDocument(input.QuotaCode!, value));
  };
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => handle(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    env: { AWS_ENDPOINT_URL_SERVICE_QUOTAS: endpoint },
    requests,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
