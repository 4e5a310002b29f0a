/**
 * Stack configuration (`cloudcompute:*` keys and `aws:region`) to a validated JobSpec.
 *
 * A pure function over a key lookup, so `pulumi up` (index.ts, stack config) and the driver (flags, config file)
 * share one reading of the keys. Every problem names the config key it came from and what is expected, and all
 * problems are reported together, before any resource is declared.
 */
import { CONFIG_KEYS, DEPLOY_KEYS, KNOWN_KEYS, SOURCE_KEYS, type ValueKind } from "./config-keys";
import { fillInputTemplates, TemplateError, type TemplateContext } from "./input-templates";
import { ManifestError, PICK_MODES, type PickMode } from "./nda-manifest";
import { makeJobId } from "./layout";
import { isPlatformName, type PlatformName } from "./platform";
import { formatPath, JobSpec, API_VERSION, LimitsSpec } from "./spec";
import { neededUrlMinutes, presignedExpiry, SIGV4_MAX_SECONDS } from "./presigned";

/**
 * Refuse `cloudcompute:*` keys nobody reads: a typo (`maxRuntimeMinute`) would otherwise leave the default in force
 * silently — for max runtime, a cost guard four times looser than meant.
 */
export function checkConfigKeys(keys: Iterable<string>): void {
  const problems: string[] = [];
  for (const key of keys) {
    if (!key.startsWith("cloudcompute:") || KNOWN_KEYS.has(key)) continue;
    const near = [...KNOWN_KEYS].filter((known) => editDistance(known.toLowerCase(), key.toLowerCase()) <= 3);
    problems.push(`${key}: no such key${near.length > 0 ? ` (did you mean ${near.join(" or ")}?)` : ""}: the keys are listed in docs/configuration.md`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length];
}

export class ConfigError extends Error {
  constructor(
    /** One line per problem, each starting with the config key. */
    readonly problems: string[],
    source = "configuration",
  ) {
    super(`invalid ${source}:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

export type ConfigLookup = (key: string) => string | undefined;

/**
 * Build a validated JobSpec from config keys. `overrides` (same key names) win over `get`; the driver passes its
 * flags there. `now` fixes the time in the default job id. Throws a ConfigError naming every bad or missing key.
 */
export function specFromConfig(get: ConfigLookup, overrides: Readonly<Record<string, string | undefined>> = {}, now: Date = new Date(), sources: SpecSources = {}): JobSpec {
  const lookup = (key: string): string | undefined => {
    const value = overrides[key] ?? get(key);
    return value === undefined || value.trim() === "" ? undefined : value;
  };
  const problems: string[] = [];
  const draft: Record<string, unknown> = { apiVersion: API_VERSION };
  const subject = JobSpec.shape.subject.safeParse(lookup("cloudcompute:subject") ?? "");
  const manifestPath = lookup(SOURCE_KEYS.manifest.key);
  if (lookup("cloudcompute:instanceType")?.trim() === "auto") {
    // The driver replaces auto before it gets here; pulumi up has no comparisons to choose from.
    problems.push("cloudcompute:instanceType: auto is chosen by the driver from a comparison (npm run job -- --instance-type auto --time-budget MINUTES), not by pulumi up: give a type such as m5.4xlarge");
  }
  for (const entry of CONFIG_KEYS) {
    // With a manifest and no inputs, the job's one input is the subject's file(s) from the manifest.
    const raw = lookup(entry.key) ?? (entry.kind === "inputs" && manifestPath !== undefined ? '{"url":"{manifest}"}' : undefined);
    if (raw === undefined) {
      if (entry.required) problems.push(`${entry.key}: required: expected ${entry.expected}`);
      continue;
    }
    try {
      let value = convert(entry.kind, raw);
      // Placeholders are filled here for `pulumi up` and the driver alike (a literal `{subject}` would only fail on
      // the instance); a subject that does not parse is reported under its own key.
      if (entry.kind === "inputs" && subject.success) value = fillInputTemplates(value as Record<string, unknown>[], templateContext(subject.data, lookup, sources));
      setAt(draft, entry.specPath, value);
    } catch (err) {
      const message = (err as Error).message;
      if (err instanceof SourceError) problems.push(message);
      else if (err instanceof ManifestError) problems.push(`${SOURCE_KEYS.manifest.key}: ${message}`);
      else if (err instanceof TemplateError) problems.push(`${entry.key}: ${message}`);
      else problems.push(`${entry.key}: ${message}: expected ${entry.expected}`);
    }
  }
  if (Array.isArray(draft.inputs)) draft.inputs = signS3Inputs(draft.inputs, draft.limits, sources, problems);
  if (problems.length > 0) throw new ConfigError(problems);

  if (draft.jobId === undefined) draft.jobId = defaultJobId(draft.subject as string, now);
  const result = JobSpec.safeParse(draft);
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.map((issue) => `${configKeyFor(issue.path)}: ${issue.message}`));
}

/** Where the reader may look for files a config names (the manifest): given by index.ts and the driver. */
export interface SpecSources {
  /** The text of a file named in config (a path as written there; the caller resolves it). */
  readFile?: (path: string) => string;
  /** The caller (the driver) resolves `cloudcompute:ndaPackage` itself; without this the key is refused. */
  ndaPackage?: boolean;
  /** The driver's signer for `s3://` inputs with access presigned (`--input-profile`): the https URL, valid `seconds`. */
  presign?: (url: string, seconds: number) => string;
}

/**
 * Inputs written `{url: s3://…, access: presigned}` become https URLs signed for as long as the job may need them;
 * only the driver can sign (with a local profile), so without a signer they are refused, naming the flag.
 */
function signS3Inputs(inputs: unknown[], rawLimits: unknown, sources: SpecSources, problems: string[]): unknown[] {
  const parsedLimits = LimitsSpec.safeParse(rawLimits ?? {});
  const limits = parsedLimits.success ? parsedLimits.data : { maxRuntimeMinutes: 240, graceMinutes: 10 };
  const seconds = neededUrlMinutes(limits) * 60;
  return inputs.map((input, index) => {
    if (!isPlainObject(input) || input.access !== "presigned" || typeof input.url !== "string" || !input.url.startsWith("s3://")) return input;
    const key = `cloudcompute:inputs[${index}]`;
    if (!sources.presign) {
      problems.push(`${key}: ${input.url} with access "presigned" is signed by the driver: give --input-profile NAME (a local AWS profile that can read it), or use access "role" (the instance role reads it) or "public"`);
      return input;
    }
    if (seconds > SIGV4_MAX_SECONDS) {
      problems.push(`${key}: the job may need its URL for ${seconds / 60} min (boot allowance + max runtime + grace + margin), longer than a presigned URL can live (7 days): give a shorter --max-runtime`);
      return input;
    }
    try {
      // The URL is redacted wherever it is shown: the origin says which object it reads and until when.
      const url = sources.presign(input.url, seconds);
      const expiry = presignedExpiry(url);
      const origin = [`${input.url} signed by the driver (--input-profile)`, input.origin, expiry ? `URL expires ${expiry.toISOString()}` : undefined].filter(Boolean).join("; ");
      return { ...input, url, origin: origin.slice(0, 1000) };
    } catch (err) {
      problems.push(`${key}: ${(err as Error).message}`);
      return input;
    }
  });
}

/** A problem with a file the config names: its message stands on its own. */
class SourceError extends Error {}

function templateContext(subject: string, lookup: (key: string) => string | undefined, sources: SpecSources): TemplateContext {
  const path = lookup(SOURCE_KEYS.manifest.key);
  const pick = lookup(SOURCE_KEYS.pick.key) ?? "error";
  if (!(PICK_MODES as readonly string[]).includes(pick)) throw new SourceError(`${SOURCE_KEYS.pick.key} "${pick}": expected ${SOURCE_KEYS.pick.expected}`);
  if (lookup(SOURCE_KEYS.ndaPackage.key) !== undefined && !sources.ndaPackage) {
    // Its presigned URLs are asked for per job, just before launch, with credentials the stack must never hold.
    throw new SourceError(`${SOURCE_KEYS.ndaPackage.key}: an NDA package is resolved by the driver (npm run job -- --nda-package ID ...), not by pulumi up`);
  }
  const context: TemplateContext = { subject, session: lookup(SOURCE_KEYS.session.key) };
  if (path === undefined) {
    const orphan = [SOURCE_KEYS.dataType, SOURCE_KEYS.pick].filter((entry) => lookup(entry.key) !== undefined).map((entry) => entry.key);
    if (orphan.length > 0) throw new SourceError(`${orphan.join(", ")}: needs ${SOURCE_KEYS.manifest.key} (--manifest FILE), among whose files it chooses`);
    return context;
  }
  if (!sources.readFile) throw new SourceError(`${SOURCE_KEYS.manifest.key}: files cannot be read here`);
  let text: string;
  try {
    text = sources.readFile(path);
  } catch (err) {
    throw new SourceError(`${SOURCE_KEYS.manifest.key}: ${path} cannot be read: ${(err as Error).message}`);
  }
  return { ...context, manifest: { path, text, dataType: lookup(SOURCE_KEYS.dataType.key), pick: pick as PickMode } };
}

/** The default job id; a subject that does not normalise is left for the schema to report under its own key. */
function defaultJobId(subject: string, now: Date): string {
  const parsed = JobSpec.shape.subject.safeParse(subject);
  return makeJobId(parsed.success ? parsed.data : "invalid", now);
}

export interface DeployConfig {
  platform: PlatformName;
  agentBundlePath?: string;
}

export function deployConfigFromConfig(get: ConfigLookup): DeployConfig {
  const platform = get(DEPLOY_KEYS.platform.key) ?? "aws";
  if (!isPlatformName(platform)) {
    throw new ConfigError([`${DEPLOY_KEYS.platform.key}: got "${platform}": expected ${DEPLOY_KEYS.platform.expected}`]);
  }
  return { platform, agentBundlePath: get(DEPLOY_KEYS.agentBundle.key) };
}

/** Map a JobSpec field path back to the config key it came from, keeping the part below the key. */
export function configKeyFor(path: readonly PropertyKey[]): string {
  let best: (typeof CONFIG_KEYS)[number] | undefined;
  for (const entry of CONFIG_KEYS) {
    const matches = entry.specPath.every((part, i) => path[i] === part);
    if (matches && (!best || entry.specPath.length > best.specPath.length)) best = entry;
  }
  // A refinement over the whole instance block is the ami/amiParameter conflict.
  if (!best && path.length === 1 && path[0] === "instance") return "cloudcompute:ami";
  if (!best) return formatPath(path) || "(config)";
  const below = path.slice(best.specPath.length);
  if (below.length === 0) return best.key;
  const rest = formatPath(below);
  return typeof below[0] === "number" ? `${best.key}${rest}` : `${best.key}.${rest}`;
}

function convert(kind: ValueKind, raw: string): unknown {
  switch (kind) {
    case "string":
      return raw.trim();
    case "integer": {
      if (!/^\s*-?\d+\s*$/.test(raw)) throw new Error(`got "${raw}"`);
      return Number(raw);
    }
    case "boolean": {
      const value = raw.trim().toLowerCase();
      if (value !== "true" && value !== "false") throw new Error(`got "${raw}"`);
      return value === "true";
    }
    case "command": {
      if (!raw.trim().startsWith("[")) return raw.trim().split(/\s+/);
      const list = parseStructured(raw);
      if (!Array.isArray(list) || !list.every((item) => typeof item === "string")) throw new Error("not a list of strings");
      return list;
    }
    case "stringList": {
      if (!raw.trim().startsWith("[")) return [raw.trim()];
      const list = parseStructured(raw);
      if (!Array.isArray(list) || !list.every((item) => typeof item === "string")) throw new Error("not a list of strings");
      return list;
    }
    case "stringMap": {
      const map = parseStructured(raw);
      if (!isPlainObject(map)) throw new Error("not a map");
      return Object.fromEntries(
        Object.entries(map).map(([name, value]) => {
          if (typeof value === "object" && value !== null) throw new Error(`the value of "${name}" is not a string`);
          return [name, String(value)];
        }),
      );
    }
    case "inputs":
      return inputsFromConfig(raw);
  }
}

/**
 * Inputs may be written as one S3 URL, one object, or a list of URLs and objects. Unnamed inputs are called
 * `input` (a single input) or `input1`, `input2`, ... so `{input.NAME}` always has a name to refer to.
 */
function inputsFromConfig(raw: string): unknown[] {
  const text = raw.trim();
  const value: unknown = text.startsWith("[") || text.startsWith("{") ? parseStructured(text) : text;
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) throw new Error("the list is empty");
  return items.map((item, index) => {
    const input = typeof item === "string" ? { url: item } : item;
    if (!isPlainObject(input)) throw new Error(`item ${index} is neither a URL nor an object`);
    if (input.name !== undefined) return input;
    return { name: items.length === 1 ? "input" : `input${index + 1}`, ...input };
  });
}

/** Pulumi hands structured config (YAML lists and maps) to programs as JSON text. */
function parseStructured(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    throw new Error("not valid JSON (write it as a YAML list/map in the stack file, or as JSON)");
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function setAt(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const part of path.slice(0, -1)) {
    node[part] ??= {};
    node = node[part] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

/**
 * What a platform cannot run safely. Runtime `none` runs the command as a host process beside the agent: on an EC2
 * instance that means as root with the job role's credentials at hand, able to write the job's marker and results
 * itself. It is for `--platform local`, where the host is the user's own machine.
 */
export function checkPlatformSupport(spec: JobSpec, platform: PlatformName): void {
  if (platform === "aws" && spec.container.runtime === "apptainer" && spec.container.network === "bridge") {
    // Without --net, apptainer shares the host's network namespace: IMDS is then one hop away for the job's code.
    throw new ConfigError([
      `cloudcompute:network: "bridge" with apptainer shares the instance's network, where the job's code could take the job role's credentials and forge its result; on aws use docker or podman for a job that needs the network`,
    ]);
  }
  if (platform === "aws" && spec.container.runtime === "none") {
    throw new ConfigError([
      `cloudcompute:runtime: "none" runs the command on the instance itself, as root beside the agent and with the job role's credentials, where it could forge the job's result; on aws use docker, podman or apptainer ("none" is for --platform local)`,
    ]);
  }
}
