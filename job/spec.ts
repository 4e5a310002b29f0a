/**
 * The job model: one versioned JobSpec shared by the driver, the stack program and the agent.
 *
 * A spec is plain JSON. `parseJobSpec` validates it at run time and names the bad field in its error, so bad input
 * is refused before any cloud resource exists.
 */
import { z } from "zod";
import { inputLayout } from "./input-file";
import { unknownPlaceholders } from "./command";
import { parseS3Url } from "./s3url";
import { bidsSubject, normaliseSubject } from "./subject";
import { JOB_ID_PATTERN } from "./layout";

import { API_VERSION } from "./api-version";

export { API_VERSION };

/** Job ids that would collide with the shared folders of the job area (`_cloudcompute/agent/`: the agent bundles). */
export const RESERVED_JOB_IDS = ["agent", "subjects"];

/** Where a file lives and how the agent may read it. */
export const InputAccess = z.enum([
  /** An S3 object read with the instance role; the IAM policy grants GetObject on exactly this key. */
  "role",
  /** A presigned HTTPS URL (NDA data packages hand these out). It is a secret: never in user-data or logs. */
  "presigned",
  /** A public bucket read without signing (OpenNeuro, INDI). */
  "public",
]);
export type InputAccess = z.infer<typeof InputAccess>;

export const ExtractMode = z.enum(["auto", "none", "tar", "tgz", "zip"]);
export type ExtractMode = z.infer<typeof ExtractMode>;

const s3Url = z.string().refine(
  (value) => {
    try {
      parseS3Url(value);
      return true;
    } catch {
      return false;
    }
  },
  { message: "expected an S3 URL s3://bucket/key with a valid bucket name" },
);

const s3Prefix = s3Url.refine((value) => !/[*?[]/.test(value), { message: "an S3 prefix may not contain wildcards" });

const safeName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, "expected 1-32 lowercase letters, digits, '_' or '-' (starting with a letter/digit)");

export const InputSpec = z
  .object({
    /** The name the container sees: the input lands under /data/inputs/<name>/. */
    name: safeName,
    url: z.string().min(1),
    access: InputAccess.default("role"),
    /** Extract an archive while it downloads; `auto` decides from the URL's extension. */
    extract: ExtractMode.default("auto"),
    // Glob (relative to the input's directory) choosing the file(s) the container gets, e.g. `**/*_T1w.nii`.
    select: z.string().min(1).optional(),
    /** Several files may match `select`; otherwise more than one match is an error. */
    allowMultiple: z.boolean().default(false),
    /** With `select`, the container sees only the selected files ("selected", the default) or the whole input ("all"). */
    mount: z.enum(["selected", "all"]).optional(),
    /** Expected SHA-256 (hex) of the downloaded object, checked by the agent. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex digits").optional(),
    /** Where the URL came from when it was looked up (e.g. an NDA manifest and its line): for the record. */
    origin: z.string().max(1000).optional(),
  })
  .strict()
  .superRefine((input, ctx) => {
    const scheme = input.url.split(":")[0];
    if (input.access === "presigned" && scheme !== "https") {
      ctx.addIssue({ code: "custom", path: ["url"], message: "a presigned input needs an https:// URL" });
    }
    if (input.access !== "presigned" && scheme !== "s3") {
      ctx.addIssue({
        code: "custom",
        path: ["url"],
        message: `an input with access "${input.access}" needs an s3:// URL (use access "presigned" for https)`,
      });
    }
    const layout = inputLayout(input.url, input.extract);
    if ("error" in layout) ctx.addIssue({ code: "custom", path: [layout.field], message: layout.error });
    if (scheme === "s3") {
      try {
        const { key } = parseS3Url(input.url);
        if (!key || key.endsWith("/")) throw new Error("the URL names no object");
      } catch (err) {
        ctx.addIssue({ code: "custom", path: ["url"], message: (err as Error).message });
      }
    }
  });
export type InputSpec = z.infer<typeof InputSpec>;

export const ContainerRuntime = z.enum(["docker", "podman", "apptainer", "none"]);
export type ContainerRuntime = z.infer<typeof ContainerRuntime>;
export const ContainerNetwork = z.enum(["none", "bridge"]);

export const ContainerSpec = z
  .object({
    /** Image reference (`neuronets/kwyk:latest-cpu`); for runtime `none`, ignored. */
    image: z.string().min(1),
    runtime: ContainerRuntime.default("docker"),
    /**
     * Arguments after the image's entrypoint (or the program and its arguments for runtime `none`). Placeholders:
     * {input} (first input's selected file), {input.NAME}, {inputs} (all selected files, one argument each),
     * {output} (output directory), {subject}, {jobId}.
     */
    command: z.array(z.string()).default([]),
    entrypoint: z.string().min(1).optional(),
    // Values go to the container through an env file (one line each): no line breaks.
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "invalid environment variable name"), z.string().regex(/^[^\r\n\0]*$/, "an environment value may not contain line breaks"))
      .default({}),
    /** Number of GPUs to pass through (0: none). */
    gpus: z.number().int().min(0).max(16).default(0),
    /**
     * The container's network. `none` (default): the agent does all input and output, so code in the image cannot
     * send a restricted dataset anywhere. `bridge`: for images that must download at run time (e.g. TemplateFlow).
     */
    network: ContainerNetwork.default("none"),
  })
  .strict();
export type ContainerSpec = z.infer<typeof ContainerSpec>;

/** `subject`: results under `<prefix>/<subject>/`; `bids`: under `<prefix>/sub-<label>/` with a dataset_description.json. */
export const OutputLayout = z.enum(["subject", "bids"]);
export type OutputLayout = z.infer<typeof OutputLayout>;

export const OutputSpec = z
  .object({
    /** Results go to `<prefix>/<subject>/`; the job's private area is `<prefix>/_cloudcompute/<jobId>/`. */
    prefix: s3Prefix,
    /** Globs (relative to the output directory) of files to upload. */
    globs: z.array(z.string().min(1)).min(1).default(["**"]),
    layout: OutputLayout.default("subject"),
  })
  .strict();
export type OutputSpec = z.infer<typeof OutputSpec>;

export const LimitsSpec = z
  .object({
    maxRuntimeMinutes: z.number().int().min(1).max(7 * 24 * 60).default(240),
    /** Extra time after max runtime before the watchdog powers the instance off regardless. */
    graceMinutes: z.number().int().min(1).max(120).default(10),
    /** The driver fails the job when the agent's status object is older than this. */
    heartbeatTimeoutSeconds: z.number().int().min(30).max(3600).default(300),
  })
  .strict();
export type LimitsSpec = z.infer<typeof LimitsSpec>;

/** An EC2 instance type's name: family (with generation digit) and size, e.g. m5.4xlarge, c7gn.16xlarge. */
export const INSTANCE_TYPE_PATTERN = /^[a-z][a-z0-9-]*\d[a-z0-9-]*\.[a-z0-9]+$/;

export const InstanceSpec = z
  .object({
    type: z.string().regex(INSTANCE_TYPE_PATTERN, "expected an EC2 instance type such as m5.4xlarge"),
    spot: z.boolean().default(false),
    /** An explicit AMI id; otherwise `amiParameter`, otherwise the Amazon Linux 2023 (or GPU) public parameter. */
    ami: z.string().regex(/^ami-[0-9a-f]{8,17}$/, "expected an AMI id ami-...").optional(),
    amiParameter: z.string().startsWith("/", "expected an SSM parameter name starting with /").optional(),
    rootVolumeGiB: z.number().int().min(8).max(16384).default(50),
    region: z.string().regex(/^[a-z]{2}(-gov)?-[a-z]+-\d$/, "expected an AWS region such as us-east-1"),
    subnetId: z.string().regex(/^subnet-[0-9a-f]{8,17}$/, "expected a subnet id subnet-...").optional(),
  })
  .strict()
  .refine((inst) => !(inst.ami && inst.amiParameter), { message: "give either ami or amiParameter, not both" });
export type InstanceSpec = z.infer<typeof InstanceSpec>;

/** The agent bundle the instance runs, content-addressed and staged by the driver. */
export const AgentRef = z
  .object({
    url: s3Url,
    sha256: z.string().regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex digits"),
  })
  .strict();
export type AgentRef = z.infer<typeof AgentRef>;

export const JobSpec = z
  .object({
    apiVersion: z.literal(API_VERSION),
    jobId: z
      .string()
      .regex(JOB_ID_PATTERN, "expected a Pulumi-compatible stack name")
      .refine((id) => !RESERVED_JOB_IDS.includes(id.toLowerCase()), {
        message: `${RESERVED_JOB_IDS.map((id) => `"${id}"`).join(", ")} are reserved: they name shared folders in the job area`,
      }),
    subject: z.string().transform((value, ctx) => {
      try {
        return normaliseSubject(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
        return z.NEVER;
      }
    }),
    inputs: z.array(InputSpec).min(1),
    container: ContainerSpec,
    outputs: OutputSpec,
    limits: LimitsSpec.default({ maxRuntimeMinutes: 240, graceMinutes: 10, heartbeatTimeoutSeconds: 300 }),
    instance: InstanceSpec,
    agent: AgentRef.optional(),
    /**
     * A nonce naming this launch of the job. Status and marker carry it; the driver and the user-data ignore any
     * whose launchId differs (an earlier launch under a reused job id left them). Set by the driver per attempt and
     * by declareJob (random per `pulumi up`) when absent.
     */
    launchId: z.string().regex(/^[A-Za-z0-9-]{8,64}$/, "expected 8-64 letters, digits or '-'").optional(),
    /**
     * Free-form labels copied into tags (EC2 and IAM) and the provenance record. IAM's tag rules are the stricter:
     * keys up to 128 and values up to 256 characters of letters, digits, spaces and `_ . : / = + - @`.
     */
    labels: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.:/=+@-]{1,128}$/, "invalid label name: 1-128 letters, digits or _ . : / = + - @"),
        z.string().max(256, "a label value holds at most 256 characters").regex(/^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u, "a label value may hold only letters, digits, spaces and _ . : / = + - @ (AWS tag rules)"),
      )
      .default({}),
  })
  .strict()
  .superRefine((spec, ctx) => {
    for (const name of Object.keys(spec.labels)) {
      if (/^aws:/i.test(name) || name.startsWith("cloudcompute:") || name === "Name") {
        ctx.addIssue({ code: "custom", path: ["labels", name], message: "reserved tag name (aws:*, cloudcompute:* and Name are set by cloudcompute or AWS)" });
      }
    }
    if (spec.outputs.layout === "bids" && !/^sub-[A-Za-z0-9]+$/.test(bidsSubject(spec.subject))) {
      ctx.addIssue({
        code: "custom",
        path: ["outputs", "layout"],
        message: `subject "${spec.subject}" gives the BIDS folder "${bidsSubject(spec.subject)}", but a BIDS label is letters and digits only: name the subject sub-<label> or use layout "subject"`,
      });
    }
    const names = new Set<string>();
    spec.inputs.forEach((input, index) => {
      if (names.has(input.name)) {
        ctx.addIssue({ code: "custom", path: ["inputs", index, "name"], message: `duplicate input name "${input.name}"` });
      }
      names.add(input.name);
    });
    const unknown = unknownPlaceholders(spec.container.command, names);
    if (unknown.length > 0) {
      ctx.addIssue({
        code: "custom",
        path: ["container", "command"],
        message: `unknown placeholder(s) ${unknown.map((n) => `{${n}}`).join(", ")}: use {input}, {input.NAME}, {inputs}, {output}, {subject} or {jobId}`,
      });
    }
  });
/** A validated spec, with defaults filled in. */
export type JobSpec = z.infer<typeof JobSpec>;
/** What a user may write: defaults may be left out. */
export type JobSpecInput = z.input<typeof JobSpec>;

export class JobSpecError extends Error {
  constructor(
    message: string,
    /** One line per problem, each starting with the dotted path of the bad field. */
    readonly problems: string[],
  ) {
    super(message);
    this.name = "JobSpecError";
  }
}

/** `inputs[0].url` from a zod issue path; shared with job/config.ts, which maps paths back to config keys. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, part) => (typeof part === "number" ? `${acc}[${part}]` : acc ? `${acc}.${String(part)}` : String(part)), "");
}

/** Validate unknown JSON into a JobSpec, or throw a JobSpecError naming every bad field. */
export function parseJobSpec(value: unknown, source = "job spec"): JobSpec {
  const result = JobSpec.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `${formatPath(issue.path) || "(spec)"}: ${issue.message}`);
  throw new JobSpecError(`invalid ${source}:\n  ${problems.join("\n  ")}`, problems);
}

/** Serialise a spec to the canonical JSON the agent reads (stable key order as declared). */
export function serialiseJobSpec(spec: JobSpec): string {
  return JSON.stringify(spec, null, 2) + "\n";
}

/**
 * Does the spec contain a secret that must be kept out of plain-text state and logs? Presigned URLs, and container
 * env values (tokens and keys are what people put there).
 */
export function specHasSecrets(spec: JobSpec): boolean {
  return spec.inputs.some((input) => input.access === "presigned") || Object.keys(spec.container.env).length > 0;
}

/** A copy of the spec safe to print or log: presigned URLs lose their signature, env values are hidden. */
export function redactSpec(spec: JobSpec): JobSpec {
  return {
    ...spec,
    inputs: spec.inputs.map((input) =>
      input.access === "presigned" ? { ...input, url: redactUrl(input.url) } : input,
    ),
    container: { ...spec.container, env: Object.fromEntries(Object.keys(spec.container.env).map((name) => [name, "<redacted>"])) },
  };
}

export function redactUrl(url: string): string {
  const q = url.indexOf("?");
  return scrubSignatures(q < 0 ? url : `${url.slice(0, q)}?<redacted>`);
}

/** Query parameters of presigned URLs (SigV4 and SigV2) that grant access: their values never reach a log. */
const SIGNING_PARAMS = /((?:X-Amz-(?:Signature|Credential|Security-Token))|Signature|AWSAccessKeyId|x-amz-security-token)=[^&\s"'<>]*/gi;

/** `text` (an error message, a log line) with signing parameters' values removed wherever they appear. */
export function scrubSignatures(text: string): string {
  return text.replace(SIGNING_PARAMS, "$1=<redacted>");
}

/** `text` with every occurrence of `secretUrl` replaced by its redacted form, and any other signature scrubbed. */
export function redactUrlIn(text: string, secretUrl: string): string {
  return scrubSignatures(text.split(secretUrl).join(redactUrl(secretUrl)));
}

/**
 * Why this job's secrets would be decryptable by anyone who reads the state, or undefined: it holds secrets
 * (presigned URLs, env values) and the passphrase is empty — unset, set to "", or a passphrase file that is empty.
 */
export function emptyPassphraseProblem(spec: JobSpec, env: NodeJS.ProcessEnv): string | undefined {
  if (!specHasSecrets(spec)) return undefined;
  const file = env.PULUMI_CONFIG_PASSPHRASE_FILE;
  let passphrase = env.PULUMI_CONFIG_PASSPHRASE ?? "";
  if (file) {
    try {
      passphrase = (require("node:fs") as typeof import("node:fs")).readFileSync(file, "utf8").trim();
    } catch {
      return `PULUMI_CONFIG_PASSPHRASE_FILE ${file} cannot be read`;
    }
  }
  if (passphrase !== "") return undefined;
  const what = [
    ...spec.inputs.filter((input) => input.access === "presigned").map((input) => `inputs "${input.name}" (a presigned URL)`),
    ...Object.keys(spec.container.env).map((name) => `container env ${name}`),
  ];
  return (
    `this job holds secrets (${what.join(", ")}), which Pulumi keeps encrypted in the stack's state — but the passphrase is empty, ` +
    `so anyone who can read the backend could decrypt them.\n` +
    `  Set one first, and keep it (every later command on these stacks needs it):  export PULUMI_CONFIG_PASSPHRASE='<a long random passphrase>'\n` +
    `  (or PULUMI_CONFIG_PASSPHRASE_FILE=<a file holding it>).`
  );
}
