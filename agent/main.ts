/**
 * The agent's command line: `node agent.js --spec s3://bucket/.../spec.json [--workdir DIR] [--no-poweroff]`.
 * Reads the spec with the default AWS credential chain, runs the job, writes the marker, then powers the machine
 * off unless told not to (--no-poweroff or CLOUDCOMPUTE_POWEROFF=0). Exit 0 on success, 1 on job failure.
 */
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import yargs from "yargs";
import { markerBesideSpec } from "../job/layout";
import { failureMarker } from "../job/records";
import { parseS3Url } from "../job/s3url";
import { parseJobSpec, type JobSpec } from "../job/spec";
import { errorMessage } from "../common/errors";
import { JobFailure } from "./errors";
import { instanceInfo, spotInterruptionNotice, type SpotNotice } from "./instance";

/** EC2 gives a spot instance two minutes' notice: looking every 5 s leaves the agent most of them to stop cleanly. */
const SPOT_NOTICE_POLL_MS = Number(process.env.CLOUDCOMPUTE_SPOT_POLL_MS ?? 5000);
import { runAgentJob } from "./run";
import { putJson } from "./report";
import { withRetries } from "../common/retry";
import { s3ClientFor } from "../common/s3-client";
import { AGENT_VERSION } from "./version";
import { silenceAwsSdkNodeNotice } from "../job/node-support";

export function poweroffEnabled(flag: boolean): boolean {
  return flag && process.env.CLOUDCOMPUTE_POWEROFF !== "0";
}

export function powerOff(): void {
  process.stderr.write("cloudcompute agent: powering off\n");
  const viaSystemd = spawnSync("systemctl", ["poweroff"], { stdio: "inherit" });
  if (viaSystemd.status !== 0) spawnSync("shutdown", ["-h", "now"], { stdio: "inherit" });
}

function defaultWorkdir(jobId: string): string {
  // Not /tmp: on Amazon Linux it is a RAM-backed tmpfs, too small for subject data.
  const base = process.getuid?.() === 0 ? "/var/lib/cloudcompute" : path.join(os.tmpdir(), "cloudcompute");
  return path.join(base, jobId);
}

async function readSpec(specUrl: string, region: string | undefined): Promise<{ spec?: JobSpec; raw?: unknown; error?: string }> {
  const loc = parseS3Url(specUrl);
  const client = s3ClientFor(loc.bucket, { region });
  let text: string;
  try {
    const res = await withRetries(() => client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key })));
    text = await res.Body!.transformToString();
  } catch (err) {
    return { error: `cannot read the job spec ${specUrl}: ${errorMessage(err)}` };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
    return { spec: parseJobSpec(raw, `job spec ${specUrl}`), raw };
  } catch (err) {
    return { raw, error: errorMessage(err) };
  }
}

/** With no usable spec, the marker goes next to the spec file (the job's private area by layout). */
async function writeBootstrapFailure(specUrl: string, raw: unknown, message: string, region: string | undefined): Promise<void> {
  const loc = parseS3Url(specUrl);
  const fields = (raw && typeof raw === "object" ? raw : {}) as { jobId?: unknown; subject?: unknown; launchId?: unknown };
  const marker = failureMarker({
    jobId: typeof fields.jobId === "string" ? fields.jobId : "unknown",
    launchId: typeof fields.launchId === "string" ? fields.launchId : undefined,
    instanceId: (await instanceInfo()).id,
    subject: typeof fields.subject === "string" ? fields.subject : "unknown",
    phase: "bootstrap",
    reason: "bootstrap-failed",
    message,
    finishedAt: new Date().toISOString(),
  });
  await putJson(s3ClientFor(loc.bucket, { region }), markerBesideSpec(loc), marker);
}

export async function main(argv: string[]): Promise<number> {
  silenceAwsSdkNodeNotice();
  const args = await yargs(argv)
    .scriptName("agent.js")
    .usage("$0 --spec s3://bucket/.../spec.json [--workdir DIR] [--no-poweroff]\n\ncloudcompute on-instance agent " + AGENT_VERSION)
    .option("spec", { type: "string", demandOption: true, describe: "S3 URL of the job spec (spec.json)" })
    .option("workdir", { type: "string", describe: "working directory (default /var/lib/cloudcompute/<jobId> as root)" })
    .option("poweroff", { type: "boolean", default: true, describe: "power the machine off at the end (--no-poweroff; env CLOUDCOMPUTE_POWEROFF=0)" })
    .option("region", { type: "string", describe: "region for reading the spec (default AWS_REGION, else us-east-1)" })
    .option("status-interval", { type: "number", default: 5, describe: "seconds between status updates" })
    .option("log-interval", { type: "number", default: 30, describe: "seconds between log uploads" })
    .version(AGENT_VERSION)
    .strict()
    .help()
    .parseAsync();
  const poweroff = poweroffEnabled(args.poweroff);
  try {
    const { spec, raw, error } = await readSpec(args.spec, args.region);
    if (!spec) {
      process.stderr.write(`cloudcompute agent: ${error}\n`);
      await writeBootstrapFailure(args.spec, raw, error ?? "unreadable spec", args.region).catch((err) =>
        process.stderr.write(`cloudcompute agent: cannot write the failure marker: ${errorMessage(err)}\n`),
      );
      return 1;
    }
    if (poweroff) {
      // Backstop: whatever happens below, the machine goes down after max runtime plus grace.
      const ms = (spec.limits.maxRuntimeMinutes + spec.limits.graceMinutes) * 60_000;
      setTimeout(powerOff, ms).unref();
    }
    // A shutdown (spot interruption, watchdog, operator) sends SIGTERM: stop the container and still write a marker.
    // A spot interruption says so (the driver retries only those), whether its notice or the SIGTERM comes first.
    const stop = new AbortController();
    const spotStop = (notice: SpotNotice, how: string) =>
      stop.abort(new JobFailure("spot-interrupted", `EC2 interrupts this spot instance (${notice.action} at ${notice.time}; ${how})`));
    const onSignal = async (signal: NodeJS.Signals) => {
      const notice = await spotInterruptionNotice(500);
      if (notice) spotStop(notice, `the agent received ${signal}`);
      else stop.abort(new JobFailure("internal-error", `the agent received ${signal}: the machine is shutting down or the job was cancelled`));
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
    // Off EC2 there is no notice to wait for: only an instance with an id in its metadata is watched.
    const onEc2 = (await instanceInfo(500)).id !== undefined;
    const watchSpot = setInterval(async () => {
      if (!onEc2) return;
      const notice = await spotInterruptionNotice(500);
      if (notice && !stop.signal.aborted) spotStop(notice, "noticed from the instance metadata");
    }, SPOT_NOTICE_POLL_MS);
    watchSpot.unref();
    stop.signal.addEventListener("abort", () => clearInterval(watchSpot), { once: true });
    const { marker } = await runAgentJob(spec, {
      signal: stop.signal,
      workdir: args.workdir ?? defaultWorkdir(spec.jobId),
      statusIntervalMs: args["status-interval"] * 1000,
      logIntervalMs: args["log-interval"] * 1000,
      echo: true,
    });
    clearInterval(watchSpot);
    process.stderr.write(`cloudcompute agent: ${marker.outcome}${marker.reason ? ` (${marker.reason})` : ""}: ${marker.message}\n`);
    return marker.outcome === "succeeded" ? 0 : 1;
  } catch (err) {
    process.stderr.write(`cloudcompute agent: internal error: ${(err as Error).stack ?? errorMessage(err)}\n`);
    return 1;
  } finally {
    if (poweroff) powerOff();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`${errorMessage(err)}\n`);
      process.exit(1);
    },
  );
}
