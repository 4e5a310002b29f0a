/**
 * Where the agent runs: EC2 instance metadata through IMDSv2 (token first), or just the host name elsewhere; and
 * whether EC2 has given this spot instance its two-minute interruption notice.
 */
import { hostname } from "node:os";

/** The metadata service; CLOUDCOMPUTE_IMDS_ENDPOINT points elsewhere (tests play IMDS with a local server). */
function imdsBase(): string {
  return process.env.CLOUDCOMPUTE_IMDS_ENDPOINT || "http://169.254.169.254";
}

export interface InstanceInfo {
  type?: string;
  id?: string;
  region?: string;
  host: string;
}

/** GET a metadata path with an IMDSv2 token; undefined when unreachable or not there (404 until set). */
async function imds(paths: string[], timeoutMs: number): Promise<Array<string | undefined>> {
  // The SDK's switch for its own credential lookups; an explicitly configured endpoint is still asked.
  if (!process.env.CLOUDCOMPUTE_IMDS_ENDPOINT && process.env.AWS_EC2_METADATA_DISABLED === "true") return paths.map(() => undefined);
  try {
    const token = await fetch(`${imdsBase()}/latest/api/token`, {
      method: "PUT",
      headers: { "X-aws-ec2-metadata-token-ttl-seconds": "300" },
      signal: AbortSignal.timeout(timeoutMs),
    }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`IMDS token: HTTP ${r.status}`))));
    return await Promise.all(
      paths.map(async (path) => {
        const r = await fetch(`${imdsBase()}/latest/meta-data/${path}`, { headers: { "X-aws-ec2-metadata-token": token }, signal: AbortSignal.timeout(timeoutMs) });
        return r.ok ? (await r.text()).trim() : undefined;
      }),
    );
  } catch {
    // Not on EC2 (or metadata unreachable).
    return paths.map(() => undefined);
  }
}

export async function instanceInfo(timeoutMs = 1000): Promise<InstanceInfo> {
  const [type, id, region] = await imds(["instance-type", "instance-id", "placement/region"], timeoutMs);
  return { host: hostname(), type, id, region };
}

export interface SpotNotice {
  action: string;
  time: string;
}

/** EC2's interruption notice for this spot instance (`spot/instance-action`), if one has been given. */
export async function spotInterruptionNotice(timeoutMs = 1000): Promise<SpotNotice | undefined> {
  const [text] = await imds(["spot/instance-action"], timeoutMs);
  if (!text) return undefined;
  try {
    const notice = JSON.parse(text) as Partial<SpotNotice>;
    return typeof notice.action === "string" ? { action: notice.action, time: String(notice.time ?? "") } : undefined;
  } catch {
    return undefined;
  }
}
