/**
 * From the command line and a Pulumi.dev.yaml-style config file to a validated JobSpec. The file is read the way
 * Pulumi reads stack config (`config:` with `cloudcompute:*` and `aws:region` keys) and the flags override keys of
 * the same meaning, so `specFromConfig` (job/config.ts) is the one reading of the keys for index.ts and the driver.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { load as loadYaml } from "js-yaml";
import { checkConfigKeys, checkPlatformSupport, ConfigError, ConfigLookup, deployConfigFromConfig, specFromConfig } from "../job/config";
import type { JobSpec } from "../job/spec";
import { BadInputError } from "./errors";
import { defaultAgentBundlePath } from "../common/paths";
import type { PlatformName } from "./platform";

/** The job-describing flags every run command (single job or batch) accepts. */
export interface SpecFlags {
  config?: string;
  subject?: string;
  jobId?: string;
  image?: string;
  runtime?: string;
  command?: string;
  entrypoint?: string;
  input?: string[];
  output?: string;
  outputGlob?: string[];
  env?: string[];
  gpus?: number;
  network?: string;
  instanceType?: string;
  spot?: boolean;
  region?: string;
  rootVolume?: number;
  maxRuntime?: number;
  heartbeatTimeout?: number;
  label?: string[];
  platform?: string;
  agentBundle?: string;
  backend?: string;
}

export const DEFAULT_CONFIG_FILE = "Pulumi.dev.yaml";

export interface ConfigFile {
  path?: string;
  lookup: ConfigLookup;
  /** Every key the file sets. */
  keys: string[];
}

/**
 * Read a stack config file into a key lookup. Structured values (lists, maps) become JSON text, as Pulumi hands
 * them to programs. The default file may be absent (everything then comes from flags); a named one must exist.
 */
export function readConfigFile(file: string | undefined): ConfigFile {
  const explicit = file !== undefined;
  const resolved = path.resolve(file ?? DEFAULT_CONFIG_FILE);
  if (!fs.existsSync(resolved)) {
    if (explicit) throw new BadInputError(`config file ${resolved} does not exist`);
    return { lookup: () => undefined, keys: [] };
  }
  let document: unknown;
  try {
    document = loadYaml(fs.readFileSync(resolved, "utf8"));
  } catch (err) {
    throw new BadInputError(`config file ${resolved} is not valid YAML: ${(err as Error).message}`);
  }
  const config = (document as { config?: unknown } | null)?.config ?? {};
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new BadInputError(`config file ${resolved}: "config" must be a map of keys such as cloudcompute:image`);
  }
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(config as Record<string, unknown>)) {
    if (value === null || value === undefined) continue;
    if (typeof value === "object" && !Array.isArray(value) && "secure" in value) {
      throw new BadInputError(`config file ${resolved}: ${key} is an encrypted value, which the driver cannot read; give it as a flag or in plain text`);
    }
    values.set(key, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  return { path: resolved, lookup: (key) => values.get(key), keys: [...values.keys()] };
}

/**
 * `KEY=VALUE` pairs to a JSON map (env, labels). For `--env`, a bare `NAME` takes the value of the driver's own
 * environment variable, as `docker run -e NAME` does: a secret then never appears on a command line, where every
 * user of the machine could read it in the process table.
 */
function pairsToJson(pairs: string[] | undefined, flag: string): string | undefined {
  if (!pairs || pairs.length === 0) return undefined;
  const map: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq < 0 && flag === "env" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(pair)) {
      const value = process.env[pair];
      if (value === undefined) throw new BadInputError(`--env ${pair}: no such variable in the environment (give NAME=VALUE, or export ${pair} first)`);
      map[pair] = value;
      continue;
    }
    if (eq <= 0) throw new BadInputError(`--${flag} "${pair}": expected NAME=VALUE${flag === "env" ? " or the NAME of a variable in the environment" : ""}`);
    map[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return JSON.stringify(map);
}

/** `--input` values: URLs or JSON objects; several make a list. */
function inputsToConfig(inputs: string[] | undefined): string | undefined {
  if (!inputs || inputs.length === 0) return undefined;
  if (inputs.length === 1) return inputs[0];
  return JSON.stringify(inputs.map((value) => (value.trim().startsWith("{") ? JSON.parse(value) : value)));
}

function listToJson(values: string[] | undefined): string | undefined {
  return values && values.length > 0 ? JSON.stringify(values) : undefined;
}

const str = (value: number | boolean | undefined) => (value === undefined ? undefined : String(value));

/** Flags as config-key overrides (same names as the file). */
export function flagOverrides(flags: SpecFlags): Record<string, string | undefined> {
  return {
    "cloudcompute:subject": flags.subject,
    "cloudcompute:image": flags.image,
    "cloudcompute:runtime": flags.runtime,
    "cloudcompute:command": flags.command,
    "cloudcompute:entrypoint": flags.entrypoint,
    "cloudcompute:inputs": inputsToConfig(flags.input),
    "cloudcompute:outputPrefix": flags.output,
    "cloudcompute:outputGlobs": listToJson(flags.outputGlob),
    "cloudcompute:env": pairsToJson(flags.env, "env"),
    "cloudcompute:gpus": str(flags.gpus),
    "cloudcompute:network": flags.network,
    "cloudcompute:instanceType": flags.instanceType,
    "cloudcompute:spot": str(flags.spot),
    "aws:region": flags.region,
    "cloudcompute:rootVolumeGiB": str(flags.rootVolume),
    "cloudcompute:maxRuntimeMinutes": str(flags.maxRuntime),
    "cloudcompute:heartbeatTimeoutSeconds": str(flags.heartbeatTimeout),
    "cloudcompute:labels": pairsToJson(flags.label, "label"),
  };
}

export interface ResolvedJob {
  spec: JobSpec;
  platform: PlatformName;
  agentBundlePath: string;
  /** Backend URL from the file (`cloudcompute:backend`); PULUMI_BACKEND_URL still wins. */
  backend?: string;
  configPath?: string;
}

/** What is common to the jobs of one run: the config file and the flags. A batch resolves once per subject. */
export function resolveJob(flags: SpecFlags, now: Date = new Date()): ResolvedJob {
  const file = readConfigFile(flags.config);
  // A job id in the file names the stack `pulumi up` deploys by hand; every driver run is a new job.
  // `{subject}` in input URLs and globs is the job's subject, so one config file serves a whole batch.
  const lookup: ConfigLookup = (key) => (key === "cloudcompute:jobId" ? undefined : file.lookup(key));
  let spec: JobSpec;
  let platform: PlatformName;
  let agentBundle: string | undefined;
  try {
    checkConfigKeys(file.keys);
    const overrides = flagOverrides(flags);
    spec = specFromConfig(lookup, { ...overrides, "cloudcompute:jobId": flags.jobId }, now);
    const deploy = deployConfigFromConfig((key) => (key === "cloudcompute:platform" ? flags.platform : undefined) ?? lookup(key));
    platform = deploy.platform;
    checkPlatformSupport(spec, platform);
    agentBundle = flags.agentBundle ? path.resolve(flags.agentBundle) : deploy.agentBundlePath;
  } catch (err) {
    if (err instanceof ConfigError) {
      const source = file.path ? ` (config file ${path.relative(process.cwd(), file.path) || file.path}, flags override it)` : " (from flags; no config file)";
      throw new BadInputError(`${err.message}${source}`);
    }
    if (err instanceof SyntaxError) throw new BadInputError(`bad JSON in a flag: ${err.message}`);
    throw err;
  }
  // A bundle path from the file is relative to the file.
  const agentBundlePath = agentBundle ? path.resolve(file.path ? path.dirname(file.path) : process.cwd(), agentBundle) : defaultAgentBundlePath();
  return { spec, platform, agentBundlePath, backend: flags.backend ?? file.lookup("cloudcompute:backend"), configPath: file.path };
}
