/**
 * The instance's bootstrap script (EC2 user-data).
 *
 * It holds only names and S3 URLs of the job's own objects: never a credential, presigned URL or spec content (the
 * agent reads the spec from S3 with the instance role). The script body is fixed text; per-job values come in as
 * shell-quoted variables at the top, so no value can change what the script does.
 */
import { gzipSync } from "node:zlib";
import { formatS3Url } from "../job/s3url";
import { jobLayout } from "../job/layout";
import { failureMarker, startingStatus, type CompletionMarker, type FailureReason } from "../job/records";
import type { JobSpec } from "../job/spec";
import { BOOT_ALLOWANCE_MINUTES } from "../job/presigned";

/** EC2's limit on user-data before base64 encoding. */
export const USER_DATA_LIMIT_BYTES = 16 * 1024;

export const BOOTSTRAP_LOG_PATH = "/var/log/cloudcompute.log";

/** Placeholders the script fills in at run time; they only ever receive sanitised text. */
export const BOOTSTRAP_PLACEHOLDERS = { now: "@NOW@", message: "@MESSAGE@", instanceId: "@INSTANCE@" } as const;
const { now: NOW, message: MESSAGE, instanceId: INSTANCE } = BOOTSTRAP_PLACEHOLDERS;

// The boot allowance is the job model's (job/presigned.ts): presigned URLs must outlive it too.
export { BOOT_ALLOWANCE_MINUTES };

/** Where the script works on the instance. Tests run the script elsewhere; real jobs use the defaults. */
export interface BootstrapHost {
  logFile: string;
  agentDir: string;
  /** Where log lines are mirrored for the EC2 console output. */
  console: string;
  /** Base pause between retries of flaky steps (package mirrors, S3). */
  retrySeconds: number;
}

export const INSTANCE_HOST: BootstrapHost = {
  logFile: BOOTSTRAP_LOG_PATH,
  agentDir: "/opt/cloudcompute",
  console: "/dev/console",
  retrySeconds: 5,
};

/** Single-quote a value for bash. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The records the script may write, built by the same builders as the agent's; the parts only known on the
 * instance (time, instance id, message) are placeholders that `fill` replaces.
 */
function bootstrapFailureMarker(spec: JobSpec, reason: FailureReason, phase: CompletionMarker["phase"]): string {
  const marker = failureMarker({
    jobId: spec.jobId,
    launchId: spec.launchId,
    instanceId: INSTANCE,
    subject: spec.subject,
    phase,
    reason,
    message: MESSAGE,
    finishedAt: NOW,
    resultsPrefix: formatS3Url(jobLayout(spec).results),
  });
  return JSON.stringify(marker);
}

function bootingStatus(spec: JobSpec): string {
  const status = startingStatus({ jobId: spec.jobId, launchId: spec.launchId, instanceId: INSTANCE }, NOW, {
    booting: true,
    message: "instance booted; installing the container runtime and fetching the agent",
  });
  return JSON.stringify(status);
}

/** The per-job values the script reads, in the order they are written. */
export function bootstrapVariables(spec: JobSpec, host: BootstrapHost = INSTANCE_HOST): Record<string, string> {
  if (!spec.agent) throw new Error("the spec has no agent bundle reference (spec.agent)");
  const layout = jobLayout(spec);
  return {
    JOB_ID: spec.jobId,
    // Only markers of this launch count: one left by an earlier launch under the same job id says nothing of this one.
    LAUNCH_ID: spec.launchId ?? "",
    REGION: spec.instance.region,
    SPEC_URL: formatS3Url(layout.spec),
    AGENT_URL: spec.agent.url,
    AGENT_SHA256: spec.agent.sha256,
    MARKER_URL: formatS3Url(layout.marker),
    STATUS_URL: formatS3Url(layout.status),
    BOOTSTRAP_LOG_URL: formatS3Url(layout.bootstrapLog),
    RUNTIME: spec.container.runtime,
    GPUS: String(spec.container.gpus),
    // The agent stops the container at max runtime; this is the backstop if anything (agent included) hangs.
    WATCHDOG_MINUTES: String(BOOT_ALLOWANCE_MINUTES + spec.limits.maxRuntimeMinutes + spec.limits.graceMinutes),
    BOOTSTRAP_FAILED_MARKER: bootstrapFailureMarker(spec, "bootstrap-failed", "bootstrap"),
    AGENT_CRASHED_MARKER: bootstrapFailureMarker(spec, "internal-error", undefined),
    BOOTING_STATUS: bootingStatus(spec),
    LOG_FILE: host.logFile,
    AGENT_DIR: host.agentDir,
    CONSOLE: host.console,
    RETRY_SECONDS: String(host.retrySeconds),
  };
}

export function renderUserData(spec: JobSpec, host: BootstrapHost = INSTANCE_HOST): string {
  const header = Object.entries(bootstrapVariables(spec, host))
    .map(([name, value]) => `${name}=${shellQuote(value)}`)
    .join("\n");
  return `#!/bin/bash
# cloudcompute bootstrap: runs one job's agent, then powers off (the instance terminates on shutdown).
${header}

set -Eeuo pipefail
umask 077
exec > >(tee -a "$LOG_FILE" > "$CONSOLE") 2>&1
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
STEP="start"

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() { echo "$(now) cloudcompute[$JOB_ID]: $*"; }

# Fill a JSON template's placeholders; the message keeps only characters that are safe inside a JSON string.
fill() {
  local text="$1" message
  message=$(printf '%s' "$2" | tr -cd 'A-Za-z0-9 ._:()/=-')
  text="\${text//${NOW}/"$(now)"}"
  text="\${text//${MESSAGE}/"$message"}"
  text="\${text//${INSTANCE}/"$instance_id"}"
  printf '%s' "$text"
}

upload() { fill "$1" "$2" | aws s3 cp --only-show-errors --content-type application/json - "$3"; }

retry() {
  local attempts="$1" n=1
  shift
  until "$@"; do
    if [ "$n" -ge "$attempts" ]; then return 1; fi
    log "retrying ($n/$attempts): $*"
    sleep $((n * RETRY_SECONDS))
    n=$((n + 1))
  done
}

power_off() {
  log "powering off"
  systemctl poweroff || poweroff
}

# This launch's instance id, from IMDSv2 (empty off EC2): markers and status name it.
imds_instance_id() {
  local token
  token=$(curl -sf --max-time 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token) &&
    curl -sf --max-time 2 -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id
}
instance_id=$(imds_instance_id | tr -cd 'a-z0-9-' || true)

# A marker counts only if it is this launch's: one left under the same job id by an earlier launch does not.
# (Without ListBucket a missing object reads as an error, which counts as no marker.)
marker_exists() {
  aws s3 cp --only-show-errors "$MARKER_URL" - 2> /dev/null | grep -q "\\"launchId\\": *\\"$LAUNCH_ID\\""
}

upload_bootstrap_log() { aws s3 cp --only-show-errors "$LOG_FILE" "$BOOTSTRAP_LOG_URL" || true; }

on_bootstrap_error() {
  local code=$?
  trap - ERR
  set +e
  log "bootstrap failed during: $STEP (exit code $code)"
  if ! marker_exists; then
    upload "$BOOTSTRAP_FAILED_MARKER" "bootstrap step failed: $STEP (exit code $code)" "$MARKER_URL"
  fi
  upload_bootstrap_log
  power_off
  exit 1
}
trap on_bootstrap_error ERR

STEP="arm watchdog"
log "job $JOB_ID: powering off in $WATCHDOG_MINUTES minutes whatever happens"
if ! systemd-run --unit=cloudcompute-watchdog --on-active="\${WATCHDOG_MINUTES}min" --timer-property=AccuracySec=1s \\
  /usr/bin/systemctl poweroff --force; then
  shutdown -P "+$WATCHDOG_MINUTES"
fi

upload "$BOOTING_STATUS" "" "$STATUS_URL" || log "could not write the booting status (continuing)"

STEP="install packages"
node_is_recent() { command -v "$1" > /dev/null && [ "$("$1" -p 'process.versions.node.split(".")[0]')" -ge 20 ]; }
NODE=""
for candidate in node node-20 node-22; do
  if node_is_recent "$candidate"; then NODE=$(command -v "$candidate"); break; fi
done
packages=()
if [ -z "$NODE" ]; then packages+=(nodejs20); fi
command -v aws > /dev/null || packages+=(awscli-2)
case "$RUNTIME" in
  docker | podman | apptainer) command -v "$RUNTIME" > /dev/null || packages+=("$RUNTIME") ;;
esac
if [ "\${#packages[@]}" -gt 0 ]; then
  log "installing \${packages[*]}"
  retry 3 dnf install -y -q "\${packages[@]}"
fi
if [ -z "$NODE" ]; then NODE=$(command -v node-20 || command -v node); fi

if [ "$RUNTIME" = docker ]; then
  STEP="start docker"
  systemctl enable --now docker
  retry 6 docker info > /dev/null
fi

if [ "$GPUS" -gt 0 ]; then
  STEP="check GPUs"
  nvidia-smi -L
fi

STEP="fetch agent bundle"
install -d -m 700 "$AGENT_DIR"
retry 5 aws s3 cp --only-show-errors "$AGENT_URL" "$AGENT_DIR/agent.js"

STEP="verify agent bundle"
echo "$AGENT_SHA256  $AGENT_DIR/agent.js" | sha256sum --check --quiet -

STEP="read job spec"
retry 5 aws s3 cp --only-show-errors "$SPEC_URL" - > /dev/null

STEP="run agent"
trap - ERR
set +e
log "starting the agent"
# --no-poweroff: this script powers off, after it has checked for the agent's marker (no race with a crash marker).
"$NODE" "$AGENT_DIR/agent.js" --spec "$SPEC_URL" --no-poweroff
agent_exit=$?
log "agent exited with code $agent_exit"
# The agent writes its own marker, also on failure; a crash before that must not leave the job without one.
if [ "$agent_exit" -ne 0 ] && ! marker_exists; then
  upload "$AGENT_CRASHED_MARKER" "the agent exited with code $agent_exit without writing a completion marker" "$MARKER_URL"
  upload_bootstrap_log
fi
power_off
`;
}

/** User-data as the instance takes it: plain text when it fits, else gzip (cloud-init unpacks it) in base64. */
export function encodeUserData(script: string): { userData?: string; userDataBase64?: string } {
  if (Buffer.byteLength(script, "utf8") <= USER_DATA_LIMIT_BYTES) return { userData: script };
  const packed = gzipSync(Buffer.from(script, "utf8"), { level: 9 });
  if (packed.length > USER_DATA_LIMIT_BYTES) {
    throw new Error(`user-data is ${packed.length} bytes even gzipped; EC2 accepts at most ${USER_DATA_LIMIT_BYTES}`);
  }
  return { userDataBase64: packed.toString("base64") };
}
