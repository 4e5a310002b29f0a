/** Where the agent runs: EC2 instance metadata through IMDSv2 (token first), or just the host name elsewhere. */
import { hostname } from "node:os";

const IMDS = "http://169.254.169.254";

export interface InstanceInfo {
  type?: string;
  id?: string;
  region?: string;
  host: string;
}

export async function instanceInfo(timeoutMs = 1000): Promise<InstanceInfo> {
  const info: InstanceInfo = { host: hostname() };
  if (process.env.AWS_EC2_METADATA_DISABLED === "true") return info;
  try {
    const token = await fetch(`${IMDS}/latest/api/token`, {
      method: "PUT",
      headers: { "X-aws-ec2-metadata-token-ttl-seconds": "300" },
      signal: AbortSignal.timeout(timeoutMs),
    }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`IMDS token: HTTP ${r.status}`))));
    const get = async (path: string) => {
      const r = await fetch(`${IMDS}/latest/meta-data/${path}`, {
        headers: { "X-aws-ec2-metadata-token": token },
        signal: AbortSignal.timeout(timeoutMs),
      });
      return r.ok ? (await r.text()).trim() : undefined;
    };
    [info.type, info.id, info.region] = await Promise.all([get("instance-type"), get("instance-id"), get("placement/region")]);
  } catch {
    // Not on EC2 (or metadata unreachable): the host name is all there is.
  }
  return info;
}
