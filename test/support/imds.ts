/**
 * A stand-in for the EC2 instance metadata service (IMDSv2): a token for PUT /latest/api/token, then the instance id
 * and, once `interrupt()` is called, a spot interruption notice at /latest/meta-data/spot/instance-action (404 before,
 * as on EC2). Requests without the token are refused, as IMDSv2 refuses them. The agent finds it through
 * CLOUDCOMPUTE_IMDS_ENDPOINT.
 */
import { createServer } from "node:http";

export interface FakeImds {
  endpoint: string;
  instanceId: string;
  /** From now on, answer the spot interruption notice. */
  interrupt(action?: "terminate" | "stop"): void;
  /** No notice any more (the next instance, as it were). */
  clear(): void;
  close(): Promise<void>;
}

export async function startFakeImds(instanceId = "i-0f00dfeedbeef0001"): Promise<FakeImds> {
  const token = "imds-token-for-tests";
  let notice: string | undefined;
  const server = createServer((req, res) => {
    if (req.method === "PUT" && req.url === "/latest/api/token") return res.end(token);
    if (req.headers["x-aws-ec2-metadata-token"] !== token) {
      res.statusCode = 401;
      return res.end();
    }
    const answers: Record<string, string | undefined> = {
      "/latest/meta-data/instance-id": instanceId,
      "/latest/meta-data/instance-type": "m5.large",
      "/latest/meta-data/placement/region": "us-east-1",
      "/latest/meta-data/spot/instance-action": notice,
    };
    const answer = answers[req.url ?? ""];
    if (answer === undefined) {
      res.statusCode = 404;
      return res.end();
    }
    res.end(answer);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    instanceId,
    interrupt(action = "terminate") {
      notice = JSON.stringify({ action, time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d{3}Z$/, "Z") });
    },
    clear() {
      notice = undefined;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
