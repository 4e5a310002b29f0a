/**
 * `npm run demo`: one complete job on this machine, nothing to configure. It starts a local S3 endpoint (moto),
 * seeds a synthetic ABCD-like subject, runs the real driver with `--platform local` — the same Pulumi stack
 * lifecycle as on AWS, with the agent as a local process — using podman when it works here (a tiny busybox image
 * served by a local registry, so the pull is real), else runtime `none`; then prints where the results are and stops
 * everything it started.
 */
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { findPulumi } from "../driver/engine";
import { errorMessage } from "../common/errors";
import type { JobResult } from "../driver/run";
import { podmanAvailable, podmanTestEnv } from "./podman";
import { localJobConfig, SANDBOX_PASSPHRASE, startDriverSandbox } from "./driver-sandbox";
import { silenceAwsSdkNodeNotice } from "../job/node-support";

const SUBJECT = "NDARINVDEMO0001";

/** The "pipeline": measure the T1w image and keep a copy, as a segmentation container would write its outputs. */
const PIPELINE = ["sh", "-c", 'wc -c < "$1" > "$2/$3_T1w_bytes.txt" && cp "$1" "$2/$3_T1w.nii" && echo "done: $3"', "sh", "{input}", "{output}", "{subject}"];

async function containerSetup(): Promise<{ image: string; runtime: string; env: Record<string, string> }> {
  if (process.env.CLOUDCOMPUTE_DEMO_RUNTIME !== "none" && podmanAvailable()) {
    try {
      const podman = await podmanTestEnv();
      return { image: podman.registryImage, runtime: "podman", env: podman.env };
    } catch (err) {
      process.stderr.write(`demo: podman is installed but could not prepare an image (${errorMessage(err).split("\n")[0]}); using runtime none\n`);
    }
  }
  return { image: "none", runtime: "none", env: {} };
}

async function main(): Promise<number> {
  silenceAwsSdkNodeNotice();
  await findPulumi(); // say how to get the CLI before starting anything
  const container = await containerSetup();
  process.stderr.write(`demo: starting a local S3 endpoint (moto) and building the agent; container runtime: ${container.runtime}\n`);
  const sandbox = await startDriverSandbox(container.env);
  try {
    await sandbox.seed([SUBJECT]);
    const config = sandbox.writeConfig("Pulumi.demo.yaml", localJobConfig(sandbox, { image: container.image, runtime: container.runtime, command: PIPELINE }));
    process.stderr.write(`demo: S3 at ${sandbox.moto.endpoint}; subject s3://${sandbox.bucket}/abcd/${SUBJECT}.tgz; running the job\n\n`);
    const res = await sandbox.run(["--config", config, "--subject", SUBJECT, "--json"], { echoStderr: true });
    if (!res.stdout.trim()) {
      process.stderr.write(`demo: the driver exited with ${res.code} and no result\n`);
      return res.code ?? 3;
    }
    const result = JSON.parse(res.stdout) as JobResult;
    const listed = await sandbox.s3.send(new ListObjectsV2Command({ Bucket: sandbox.bucket, Prefix: `results/${SUBJECT}/` }));
    process.stdout.write(`\nResult location: ${result.resultsUrl}\n`);
    for (const object of listed.Contents ?? []) process.stdout.write(`  s3://${sandbox.bucket}/${object.Key} (${object.Size} bytes)\n`);
    process.stdout.write(`Outcome: ${result.outcome}; driver ${result.timings.driver.total}s in all (stack create ${result.timings.driver.create}s, up ${result.timings.driver.up}s, wait ${result.timings.driver.wait}s, destroy ${result.timings.driver.destroy}s)\n`);
    if (process.env.CLOUDCOMPUTE_KEEP_SANDBOX) {
      process.stdout.write(
        `The job's stack was destroyed and kept with its history. Its state stays in ${sandbox.home}; explore it with\n` +
          `  export CLOUDCOMPUTE_HOME=${sandbox.home} PULUMI_CONFIG_PASSPHRASE=${SANDBOX_PASSPHRASE}\n` +
          `  npm run job -- list\n` +
          `  npm run job -- status ${result.jobId}\n` +
          `  npm run job -- history ${result.jobId}\n` +
          `  npm run job -- logs ${result.jobId}      # the agent's log, kept on disk for a local job\n` +
          `(the local S3 endpoint stops now, so the results in it are gone)\n`,
      );
    } else {
      process.stdout.write(
        `The job's stack was destroyed. The demo's whole state (backend, job index, local S3) is temporary and is removed now;\n` +
          `to keep it and explore the job with list/status/history/logs:  CLOUDCOMPUTE_KEEP_SANDBOX=1 npm run demo\n`,
      );
    }
    return res.code ?? 3;
  } finally {
    await sandbox.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`demo failed: ${errorMessage(err)}\n`);
    process.exit(3);
  },
);
