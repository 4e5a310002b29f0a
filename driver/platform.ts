/**
 * Where a job's compute runs. The stack lifecycle (stage, up, wait, refresh, destroy) is the same for every
 * platform — `declareJob` declares the platform's compute — so a platform only answers what differs: checks before
 * anything is created, whether the compute still lives, what it costs, what `--dry-run` shows, and which compute
 * no stack owns (`gc`).
 */
import * as fs from "node:fs";
import { execFileSync } from "node:child_process";
import type { EC2Client } from "@aws-sdk/client-ec2";
import type { PlatformName } from "../job/platform";
import type { JobSpec } from "../job/spec";
import { encodeUserData, renderUserData, USER_DATA_LIMIT_BYTES } from "../infra/userdata";
import { defaultLocalWorkDir, localJobAlive, reclaimLocalAgent } from "../infra/local";
import { BadInputError } from "./errors";
import { JOB_TAG, RECORD_NAMES } from "../job/layout";
import { PendingCreate, reclaimAws } from "./reclaim";
import { awsRetryConfig } from "./backoff";
import { awsJobPrices } from "./pricing";
import type { JobPrices } from "../job/pricing";

export type { PlatformName };

export interface ComputeState {
  alive: boolean;
  /** Why it ended, when it ended without a marker. */
  reason?: "spot-interrupted" | "instance-lost";
  detail?: string;
}

export interface Orphan {
  region: string;
  instanceId: string;
  jobId?: string;
  state?: string;
  launchedAt?: string;
}

export interface Platform {
  readonly name: PlatformName;
  /** How often to look at the marker and status while a job runs. */
  readonly pollIntervalMs: number;
  /** How long after `up` the first heartbeat may take (boot, package installs, agent download). */
  readonly bootGraceSeconds: number;
  /**
   * Refresh before destroy: an EC2 instance may have terminated itself (the provider then treats it as gone). A
   * local process needs none: its delete copes with a process that has already exited.
   */
  readonly refreshBeforeDestroy: boolean;
  /** Resource plugins the engine needs for this platform's stack (installed before any stack is touched). */
  readonly requiredPlugins: ReadonlyArray<{ name: string; version: string }>;
  /** Checks that need no cloud resource. Throws BadInputError. */
  preflight(spec: JobSpec, agentBundlePath: string): Promise<void>;
  computeState(instanceId: string, spec: JobSpec): Promise<ComputeState>;
  /**
   * When the compute's billing began (EC2's launch time), or undefined when the platform cannot say (the driver then
   * counts from the end of `up`).
   */
  launchedAt(instanceId: string, spec: JobSpec): Promise<number | undefined>;
  /** The compute's prices with their source and date (driver/pricing.ts), or undefined when unknown. */
  prices(spec: JobSpec): Promise<JobPrices | undefined>;
  /** What `--dry-run` shows about the compute besides the spec and stack name. */
  render(spec: JobSpec, agentBundlePath: string): Record<string, unknown>;
  /** Compute started by cloudcompute that no live stack owns. */
  findOrphans(ownedInstanceIds: ReadonlySet<string>, regions?: ReadonlySet<string>): Promise<Orphan[]>;
  /**
   * After destroy, when the job's stack holds nothing: delete what of the job still exists — what a cut-off update
   * created without recording it (driver/reclaim.ts). Returns one line per thing deleted.
   */
  reclaim(jobId: string, region: string | undefined, pending: PendingCreate[]): Promise<string[]>;
}

function commandExists(command: string): boolean {
  try {
    execFileSync(command, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export const localPlatform: Platform = {
  name: "local",
  pollIntervalMs: Number(process.env.CLOUDCOMPUTE_POLL_MS ?? 1000),
  bootGraceSeconds: 60,
  refreshBeforeDestroy: false,
  requiredPlugins: [],
  async preflight(spec, agentBundlePath) {
    if (!fs.existsSync(agentBundlePath)) {
      throw new BadInputError(`the agent bundle ${agentBundlePath} does not exist: build it with 'npm run build:agent'`);
    }
    const runtime = spec.container.runtime;
    if (runtime !== "none" && !commandExists(runtime === "apptainer" ? "apptainer" : runtime)) {
      throw new BadInputError(
        `container.runtime is "${runtime}" but '${runtime}' is not installed here: install it, or use --runtime ` +
          `with one that exists (docker, podman, apptainer, or none to run the command as a host process)`,
      );
    }
  },
  async computeState(instanceId) {
    return localJobAlive(instanceId) ? { alive: true } : { alive: false, reason: "instance-lost", detail: "the agent process has exited" };
  },
  async launchedAt() {
    return undefined; // a local agent starts during `up`: its end is as near as anything
  },
  async prices() {
    return { instance: { usdPerHour: 0, source: "local (no charge)", asOf: new Date().toISOString() } };
  },
  render(spec, agentBundlePath) {
    return { agentCommand: ["node", agentBundlePath, "--spec", `<${RECORD_NAMES.spec} URL>`, "--no-poweroff", "--workdir", `<CLOUDCOMPUTE_HOME>/local/${spec.jobId}`] };
  },
  async findOrphans() {
    return []; // a local agent is only ever started by a stack's LocalJob and stopped by its destroy (or reclaim)
  },
  async reclaim(jobId, _region, pending) {
    const workDirs = new Set([defaultLocalWorkDir(jobId), ...pending.map((p) => p.inputs.workDir).filter((d): d is string => typeof d === "string")]);
    const stopped: string[] = [];
    for (const workDir of workDirs) {
      const what = await reclaimLocalAgent(workDir, jobId);
      if (what) stopped.push(what);
    }
    return stopped;
  },
};

export { JOB_TAG };

/** The EC2 SDK, loaded only for the aws platform: it is large, and local jobs never need it. */
function ec2Sdk(): typeof import("@aws-sdk/client-ec2") {
  return require("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
}

const ec2Clients = new Map<string, EC2Client>();
/** The driver's EC2 client of a region (one per region; tests add middleware to count its calls). */
export function ec2Client(region: string): EC2Client {
  return ec2(region);
}
function ec2(region: string): EC2Client {
  let client = ec2Clients.get(region);
  if (!client) ec2Clients.set(region, (client = new (ec2Sdk().EC2Client)({ region, ...awsRetryConfig })));
  return client;
}

type Instance = NonNullable<NonNullable<import("@aws-sdk/client-ec2").DescribeInstancesResult["Reservations"]>[number]["Instances"]>[number];

/** DescribeInstances takes many ids at once; more than this per request is not worth the risk of a size limit. */
const IDS_PER_DESCRIBE = 200;
const looks = new Map<string, Map<string, Array<{ resolve: (i: Instance | undefined) => void; reject: (e: unknown) => void }>>>();

/**
 * One instance, described together with every other look in the same region within a moment: a batch waiting on a
 * thousand jobs makes a few DescribeInstances calls a round instead of a thousand, well within EC2's request rate.
 * A missing instance is undefined (one unknown id fails a whole call, so that call's ids are then looked at singly).
 */
function describeCoalesced(region: string, instanceId: string): Promise<Instance | undefined> {
  return new Promise((resolve, reject) => {
    let waiting = looks.get(region);
    if (!waiting) {
      looks.set(region, (waiting = new Map()));
      setTimeout(() => {
        looks.delete(region);
        void flushLooks(region, waiting!);
      }, 50);
    }
    waiting.set(instanceId, [...(waiting.get(instanceId) ?? []), { resolve, reject }]);
  });
}

async function flushLooks(region: string, waiting: Map<string, Array<{ resolve: (i: Instance | undefined) => void; reject: (e: unknown) => void }>>): Promise<void> {
  const sdk = ec2Sdk();
  const describe = async (ids: string[]): Promise<Map<string, Instance>> => {
    // A hung call would freeze the looks of every job in it: bounded, and retried at the next look.
    const res = await ec2(region).send(new sdk.DescribeInstancesCommand({ InstanceIds: ids }), { abortSignal: AbortSignal.timeout(20_000) });
    return new Map((res.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => [i.InstanceId!, i]));
  };
  const ids = [...waiting.keys()];
  for (let i = 0; i < ids.length; i += IDS_PER_DESCRIBE) {
    const chunk = ids.slice(i, i + IDS_PER_DESCRIBE);
    const settle = (id: string, outcome: { instance?: Instance; error?: unknown }) =>
      waiting.get(id)!.forEach((w) => (outcome.error !== undefined ? w.reject(outcome.error) : w.resolve(outcome.instance)));
    try {
      const found = await describe(chunk);
      for (const id of chunk) settle(id, { instance: found.get(id) });
    } catch (err) {
      // One unknown or malformed id fails the whole call: then each is looked at alone.
      const unknownId = (e: unknown) => ["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"].includes((e as { name?: string }).name ?? "");
      if (!unknownId(err)) {
        for (const id of chunk) settle(id, { error: err });
        continue;
      }
      for (const id of chunk) {
        try {
          settle(id, { instance: (await describe([id])).get(id) });
        } catch (single) {
          settle(id, unknownId(single) ? {} : { error: single });
        }
      }
    }
  }
}

const defaultRegion = () => process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || "us-east-1";

export const awsPlatform: Platform = {
  name: "aws",
  pollIntervalMs: Number(process.env.CLOUDCOMPUTE_POLL_MS ?? 10_000),
  bootGraceSeconds: 15 * 60,
  refreshBeforeDestroy: true,
  // The provider plugin matching the @pulumi/aws SDK in package.json: one version, written down once.
  requiredPlugins: [{ name: "aws", version: `v${(require("@pulumi/aws/package.json") as { version: string }).version}` }],
  async preflight() {
    // Credentials are checked by the engine at `up`; quotas before it (driver/quota-reads.ts, from the CLI).
  },
  async computeState(instanceId, spec) {
    if (!instanceId) return { alive: false, reason: "instance-lost", detail: "the stack recorded no instance id" };
    const instance = await describeCoalesced(spec.instance.region, instanceId);
    const state = instance?.State?.Name;
    if (!instance || state === "terminated" || state === "shutting-down" || state === "stopped" || state === "stopping") {
      const code = instance?.StateReason?.Code ?? "";
      const spot = /Spot/i.test(code) || instance?.InstanceLifecycle === "spot" && /Server\./.test(code);
      return { alive: false, reason: spot ? "spot-interrupted" : "instance-lost", detail: instance ? `${state}${code ? ` (${code}: ${instance.StateReason?.Message ?? ""})` : ""}` : "instance not found" };
    }
    return { alive: true };
  },
  async launchedAt(instanceId, spec) {
    const launched = (await describeCoalesced(spec.instance.region, instanceId))?.LaunchTime;
    return launched ? launched.getTime() : undefined;
  },
  prices(spec) {
    return awsJobPrices(spec, ec2(spec.instance.region));
  },
  render(spec) {
    const script = renderUserData(spec);
    const encoded = encodeUserData(script);
    return {
      userData: script,
      userDataBytes: Buffer.byteLength(script),
      userDataEncoding: encoded.userDataBase64 ? "gzip+base64" : "plain",
      userDataLimitBytes: USER_DATA_LIMIT_BYTES,
    };
  },
  async findOrphans(owned, recorded = new Set()) {
    const regions = new Set([...recorded, defaultRegion()]);
    const orphans: Orphan[] = [];
    for (const region of regions) {
      let token: string | undefined;
      do {
        const res = await ec2(region).send(
          new (ec2Sdk().DescribeInstancesCommand)({
            Filters: [
              { Name: "tag-key", Values: [JOB_TAG] },
              { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
            ],
            NextToken: token,
          }),
        );
        for (const instance of (res.Reservations ?? []).flatMap((r) => r.Instances ?? [])) {
          if (!instance.InstanceId || owned.has(instance.InstanceId)) continue;
          orphans.push({
            region,
            instanceId: instance.InstanceId,
            jobId: instance.Tags?.find((t) => t.Key === JOB_TAG)?.Value,
            state: instance.State?.Name,
            launchedAt: instance.LaunchTime?.toISOString(),
          });
        }
        token = res.NextToken;
      } while (token);
    }
    return orphans;
  },
  async reclaim(jobId, region, pending) {
    const where = region ?? defaultRegion();
    const iam = () => new (require("@aws-sdk/client-iam") as typeof import("@aws-sdk/client-iam")).IAMClient({ region: where, ...awsRetryConfig });
    return reclaimAws(jobId, pending, { ec2: ec2(where), iam });
  },
};

export function platformNamed(name: string): Platform {
  if (name === "aws") return awsPlatform;
  if (name === "local") return localPlatform;
  throw new BadInputError(`unknown platform "${name}": expected aws or local`);
}
