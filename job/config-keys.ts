/**
 * The one table of configuration keys. Everything else is derived from it: the stack-config reader (job/config.ts),
 * the driver's flags and their `--help` text (driver/cli.ts, driver/options.ts) and the reference table in
 * docs/configuration.md (checked by test/config-keys.test.ts), so a key cannot exist in one place and not another.
 */
import { PICK_MODES } from "./nda-manifest";
import { PLATFORM_NAMES } from "./platform";

/** How a config value is written (Pulumi hands lists and maps to programs as JSON text). */
export type ValueKind = "string" | "integer" | "boolean" | "command" | "stringList" | "stringMap" | "inputs";

/**
 * How a flag's value becomes the config value: as written (`text`), a number, a boolean, repeated `NAME=VALUE`
 * pairs (`pairs`; `env-pairs` also takes a bare `NAME` from the driver's environment), repeated values as a list
 * (`list`), or repeated inputs, each a URL or a JSON object (`inputs`).
 */
export type FlagForm = "text" | "number" | "boolean" | "pairs" | "env-pairs" | "list" | "inputs";

/** Forms whose flag may be repeated (yargs `array`), each value one item of the list or map. */
export function isRepeatable(form: FlagForm): boolean {
  return form === "pairs" || form === "env-pairs" || form === "list" || form === "inputs";
}

export interface KeyFlag {
  /** The flag's name without dashes, e.g. `instance-type`. */
  name: string;
  form: FlagForm;
  choices?: readonly string[];
}

export interface ConfigKey {
  /** Full key as written in stack config, e.g. `cloudcompute:instanceType`. */
  key: string;
  /** Where the value goes in the JobSpec; absent for keys that steer the deployment rather than the job. */
  specPath?: readonly string[];
  kind: ValueKind;
  required?: boolean;
  /** What a valid value looks like: error messages say "expected <this>". */
  expected: string;
  /** Default as documented (the JobSpec schema, or the deployment code, applies it). */
  defaultValue?: string;
  /** What the key does, for `--help` and the reference table; `expected` is appended where it adds something. */
  help: string;
  flag: KeyFlag;
  /** Why (part of) its value is a secret, when it can be: kept encrypted in the stack's state, redacted in logs. */
  secret?: string;
}

/** The keys that describe the job (they become the JobSpec), in the order the reference documents them. */
export const CONFIG_KEYS: readonly (ConfigKey & { specPath: readonly string[] })[] = [
  {
    key: "cloudcompute:subject", specPath: ["subject"], kind: "string", required: true,
    expected: "a subject id such as NDARINVXXXXXXXX, NDAR_INVXXXXXXXX or sub-01",
    help: "The subject this job processes (NDAR_INV… is normalised to NDARINV…)",
    flag: { name: "subject", form: "text" },
  },
  {
    key: "cloudcompute:jobId", specPath: ["jobId"], kind: "string", expected: "a Pulumi-compatible stack name",
    defaultValue: "job-<subject>-<UTC timestamp> (pulumi up: the stack name)",
    help: "Job id and stack name; a job id is launched once",
    flag: { name: "job-id", form: "text" },
  },
  {
    key: "cloudcompute:image", specPath: ["container", "image"], kind: "string", required: true,
    expected: "a container image reference such as neuronets/kwyk:latest-cpu",
    help: "The container image",
    flag: { name: "image", form: "text" },
  },
  {
    key: "cloudcompute:runtime", specPath: ["container", "runtime"], kind: "string",
    expected: "one of docker, podman, apptainer, none", defaultValue: "docker",
    help: "Container runtime on the compute (none: the command runs as a process; --platform local only)",
    flag: { name: "runtime", form: "text", choices: ["docker", "podman", "apptainer", "none"] },
  },
  {
    key: "cloudcompute:command", specPath: ["container", "command"], kind: "command",
    expected: "a list of arguments, or one string split on whitespace, e.g. -m bvwn_multi_prior {input} {output}/{subject}",
    defaultValue: "[] (the image's default command)",
    help: "The container's command: placeholders {input} {input.NAME} {inputs} {output} {subject} {jobId}; a value starting with a dash needs --command=VALUE",
    flag: { name: "command", form: "text" },
  },
  {
    key: "cloudcompute:entrypoint", specPath: ["container", "entrypoint"], kind: "string",
    expected: "an executable inside the image overriding its entrypoint",
    help: "Override the image's entrypoint",
    flag: { name: "entrypoint", form: "text" },
  },
  {
    key: "cloudcompute:env", specPath: ["container", "env"], kind: "stringMap",
    expected: "a map of environment variable names to values", defaultValue: "{}",
    help: "The container's environment; flag: NAME=VALUE, or NAME to take $NAME from the driver's environment (keeps a secret off the command line), repeatable",
    flag: { name: "env", form: "env-pairs" },
    secret: "its values (people put tokens and keys there)",
  },
  {
    key: "cloudcompute:network", specPath: ["container", "network"], kind: "string",
    expected: "none (no network: the agent does all I/O) or bridge (the image downloads at run time)", defaultValue: "none",
    help: "The container's network",
    flag: { name: "network", form: "text", choices: ["none", "bridge"] },
  },
  {
    key: "cloudcompute:gpus", specPath: ["container", "gpus"], kind: "integer",
    expected: "a whole number of GPUs (0-16)", defaultValue: "0",
    help: "GPUs passed to the container; needs a GPU instance type (g*, p*)",
    flag: { name: "gpus", form: "number" },
  },
  {
    key: "cloudcompute:inputs", specPath: ["inputs"], kind: "inputs", required: true, defaultValue: "with a manifest: one input, {url: {manifest}}",
    expected: "a list of inputs, each an S3 URL or an object {name, url, access, extract, select, allowMultiple, mount, sha256}",
    help: "The subject's inputs: placeholders {subject} {session} {bids_subject} in a URL are filled per job, and a url of {manifest} takes the subject's files from the manifest; flag: a URL or a JSON object, repeatable",
    flag: { name: "input", form: "inputs" },
    secret: "presigned URLs (access: presigned)",
  },
  {
    key: "cloudcompute:outputPrefix", specPath: ["outputs", "prefix"], kind: "string", required: true,
    expected: "an S3 prefix such as s3://my-lab-bucket/kwyk",
    help: "Where results go: <prefix>/<subject>/, or <prefix>/sub-<label>/ with layout bids (and the job's records under <prefix>/_cloudcompute/)",
    flag: { name: "output", form: "text" },
  },
  {
    key: "cloudcompute:outputGlobs", specPath: ["outputs", "globs"], kind: "stringList",
    expected: "a list of globs relative to the output directory", defaultValue: '["**"]',
    help: "Which output files are uploaded; flag repeatable",
    flag: { name: "output-glob", form: "list" },
  },
  {
    key: "cloudcompute:outputLayout", specPath: ["outputs", "layout"], kind: "string",
    expected: "subject or bids", defaultValue: "subject",
    help: "How results are named: subject (<prefix>/<subject>/) or bids (<prefix>/sub-<label>/, an NDA GUID's label without '_', and a BIDS-derivatives dataset_description.json at the prefix, created once)",
    flag: { name: "output-layout", form: "text", choices: ["subject", "bids"] },
  },
  {
    key: "cloudcompute:maxRuntimeMinutes", specPath: ["limits", "maxRuntimeMinutes"], kind: "integer",
    expected: "a whole number of minutes (1-10080)", defaultValue: "240",
    help: "Minutes the job may run: the agent fails it then",
    flag: { name: "max-runtime", form: "number" },
  },
  {
    key: "cloudcompute:graceMinutes", specPath: ["limits", "graceMinutes"], kind: "integer",
    expected: "a whole number of minutes (1-120)", defaultValue: "10",
    help: "Minutes of grace: the instance's watchdog powers off at boot allowance (15 min) + max runtime + grace, whatever the agent does",
    flag: { name: "grace", form: "number" },
  },
  {
    key: "cloudcompute:heartbeatTimeoutSeconds", specPath: ["limits", "heartbeatTimeoutSeconds"], kind: "integer",
    expected: "a whole number of seconds (30-3600)", defaultValue: "300",
    help: "Seconds: the driver fails a job whose status is older than this",
    flag: { name: "heartbeat-timeout", form: "number" },
  },
  {
    key: "cloudcompute:instanceType", specPath: ["instance", "type"], kind: "string", required: true,
    expected: "an EC2 instance type such as m5.4xlarge, or auto (driver only, with --time-budget)",
    help: "EC2 instance type (Graviton types get arm64 AMIs); auto: the cheapest per subject (at the job's spot or on-demand cost) that the newest comparison with a succeeded type (run --compare) saw finish within --time-budget MINUTES (each subject's wall time, launch to teardown), for the same image, command, platform and region",
    flag: { name: "instance-type", form: "text" },
  },
  {
    key: "cloudcompute:spot", specPath: ["instance", "spot"], kind: "boolean", expected: "true or false", defaultValue: "false",
    help: "A one-time spot instance, terminated on interruption (--no-spot for on-demand)",
    flag: { name: "spot", form: "boolean" },
  },
  {
    key: "cloudcompute:ami", specPath: ["instance", "ami"], kind: "string", expected: "an AMI id (ami-…)",
    defaultValue: "Amazon Linux 2023 from SSM (Deep Learning Base GPU AL2023 when gpus > 0)",
    help: "The instance's AMI (not together with amiParameter)",
    flag: { name: "ami", form: "text" },
  },
  {
    key: "cloudcompute:amiParameter", specPath: ["instance", "amiParameter"], kind: "string",
    expected: "an SSM parameter name holding an AMI id, starting with /",
    help: "An SSM parameter holding the AMI id (not together with ami)",
    flag: { name: "ami-parameter", form: "text" },
  },
  {
    key: "cloudcompute:rootVolumeGiB", specPath: ["instance", "rootVolumeGiB"], kind: "integer",
    expected: "a whole number of GiB (8-16384)", defaultValue: "50 (at least 75 with the default GPU AMI)",
    help: "Root volume size in GiB (gp3, encrypted)",
    flag: { name: "root-volume", form: "number" },
  },
  {
    key: "cloudcompute:subnetId", specPath: ["instance", "subnetId"], kind: "string",
    expected: "a subnet id subnet-... with outbound internet access", defaultValue: "a default subnet of the default VPC",
    help: "The instance's subnet: it needs outbound internet (a public IP or NAT)",
    flag: { name: "subnet", form: "text" },
  },
  {
    key: "aws:region", specPath: ["instance", "region"], kind: "string", required: true, expected: "an AWS region such as us-east-1",
    help: "The AWS region the job runs in",
    flag: { name: "region", form: "text" },
  },
  {
    key: "cloudcompute:labels", specPath: ["labels"], kind: "stringMap",
    expected: "a map of label names to values (copied into tags)", defaultValue: "{}",
    help: "Labels copied into tags and provenance (aws:*, cloudcompute:*, Name are reserved); flag: NAME=VALUE, repeatable",
    flag: { name: "label", form: "pairs" },
  },
];

/** Keys that find the job's inputs in the data (job/input-templates.ts, job/nda-manifest.ts) rather than set them. */
export const SOURCE_KEYS = {
  manifest: {
    key: "cloudcompute:manifest", kind: "string", expected: "the path of an NDA manifest such as fmriresults01.txt or datastructure_manifest.txt",
    help: "Find the subject's files in an NDA manifest from your data package: an input whose url is {manifest} gets them (with no inputs given, one such input); a path in a config file is relative to the file",
    flag: { name: "manifest", form: "text" },
  },
  dataType: {
    key: "cloudcompute:dataType", kind: "string", expected: "an NDA data type such as ABCD-MPROC-T1",
    help: "With a manifest: only files of this data type (matched against the session_det, image_description or scan_type column, else the file name)",
    flag: { name: "data-type", form: "text" },
  },
  session: {
    key: "cloudcompute:session", kind: "string", expected: "a session or visit such as baselineYear1Arm1",
    help: "The session: fills {session} in input URLs, and with a manifest keeps only its files",
    flag: { name: "session", form: "text" },
  },
  pick: {
    key: "cloudcompute:pick", kind: "string", expected: "error, latest or all", defaultValue: "error",
    help: "With a manifest, when several files match: error (list them), latest (by the timestamp in the name) or all (one input each)",
    flag: { name: "pick", form: "text", choices: PICK_MODES },
  },
  ndaPackage: {
    key: "cloudcompute:ndaPackage", kind: "string", expected: "the numeric id of one of your NDA data packages",
    help: "Take the subject's files from this NDA data package (driver only): its fmriresults01.txt or datastructure_manifest.txt (or --manifest) picks them, presigned URLs are requested per job; credentials from NDA_USERNAME/NDA_PASSWORD or --nda-credentials FILE",
    flag: { name: "nda-package", form: "text" },
  },
  ndaApi: {
    key: "cloudcompute:ndaApi", kind: "string", expected: "an https:// URL of NDA's package service", defaultValue: "https://nda.nih.gov/api/package",
    help: "The NDA package service (requests go to URL/{packageId}/files…), e.g. behind a proxy; your NDA password goes there, so a config file may name only nda.nih.gov and another host is given by flag",
    flag: { name: "nda-api", form: "text" },
  },
} as const satisfies Record<string, ConfigKey>;

/** Keys that steer how a job is deployed rather than what it is. */
export const DEPLOY_KEYS = {
  platform: {
    key: "cloudcompute:platform", kind: "string", expected: "aws or local", defaultValue: "aws",
    help: "Where the job runs: aws (EC2) or local (the agent as a process on this machine, same stack lifecycle)",
    flag: { name: "platform", form: "text", choices: PLATFORM_NAMES },
  },
  agentBundle: {
    key: "cloudcompute:agentBundle", kind: "string", expected: "the path of the built agent bundle", defaultValue: "dist/agent.js",
    help: "The built agent bundle (a path in a config file is relative to the file)",
    flag: { name: "agent-bundle", form: "text" },
  },
  backend: {
    key: "cloudcompute:backend", kind: "string", expected: "a Pulumi backend URL such as s3://lab-bucket/pulumi-state",
    defaultValue: "file://~/.cloudcompute/state",
    help: "The Pulumi backend holding the job stacks (PULUMI_BACKEND_URL wins over both flag and key)",
    flag: { name: "backend", form: "text" },
  },
  allowCrossRegion: {
    key: "cloudcompute:allowCrossRegion", kind: "boolean", expected: "true or false", defaultValue: "false",
    help: "Run even when an input's bucket is in another region than the instance (inter-region transfer is billed per GB and slower; ABCD's NDA buckets are in us-east-1)",
    flag: { name: "allow-cross-region", form: "boolean" },
  },
  inputProfile: {
    key: "cloudcompute:inputProfile", kind: "string", expected: "the name of a profile in your AWS config/credentials files",
    help: "The driver signs inputs written {url: s3://…, access: presigned} with this local AWS profile (for buckets you can read and the instance role cannot); the URL lives until boot allowance + max runtime + grace + 30 min, at most 7 days",
    flag: { name: "input-profile", form: "text" },
  },
  leaseSeconds: {
    key: "cloudcompute:leaseSeconds", kind: "integer", expected: "a whole number of seconds (10-3600)", defaultValue: "300",
    help: "The subject's run lease (driver only): renewed every fifth of this while the job runs; a dead driver's lease is taken over this long after its last renewal",
    flag: { name: "lease-seconds", form: "number" },
  },
} as const satisfies Record<string, ConfigKey>;

/** The keys a job's spec is made from: its own and those that find its inputs (what flags override per job). */
export const SPEC_SOURCE_KEYS: readonly ConfigKey[] = [...CONFIG_KEYS, ...Object.values(SOURCE_KEYS)];

/** Every key there is, job keys first. */
export const ALL_KEYS: readonly ConfigKey[] = [...SPEC_SOURCE_KEYS, ...Object.values(DEPLOY_KEYS)];

/** Every `cloudcompute:*` key there is. */
export const KNOWN_KEYS: ReadonlySet<string> = new Set(ALL_KEYS.map((entry) => entry.key));

/** `instance-type` → `instanceType`: how yargs (and resolveJob's callers) name a flag's value. */
export function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

/** The reference table (docs/configuration.md), generated from the keys. */
export function configReferenceTable(): string {
  const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("<", "&lt;");
  const rows = ALL_KEYS.map((entry) => {
    const help = entry.help.endsWith(entry.expected) ? entry.help : `${entry.help}. Expected: ${entry.expected}`;
    const secret = entry.secret ? ` **Secret:** ${entry.secret}.` : "";
    return `| \`${entry.key}\` | \`--${entry.flag.name}\` | ${entry.required ? "yes" : "no"} | ${cell(entry.defaultValue ?? "—")} | ${cell(help)}.${cell(secret)} |`;
  });
  return ["| key | flag | required | default | meaning |", "| --- | --- | --- | --- | --- |", ...rows].join("\n") + "\n";
}
