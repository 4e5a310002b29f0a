/**
 * From the command line and a Pulumi.dev.yaml-style config file to a validated JobSpec. The file is read the way
 * Pulumi reads stack config (`config:` with `cloudcompute:*` and `aws:region` keys) and the flags override keys of
 * the same meaning, so `specFromConfig` (job/config.ts) is the one reading of the keys for index.ts and the driver.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { load as loadYaml } from "js-yaml";
import { camelCase, DEPLOY_KEYS, SOURCE_KEYS, SPEC_SOURCE_KEYS, type KeyFlag } from "../job/config-keys";
import { checkConfigKeys, checkPlatformSupport, ConfigError, ConfigLookup, deployConfigFromConfig, specFromConfig } from "../job/config";
import { JobSpecError, parseJobSpec, type JobSpec } from "../job/spec";
import { BadInputError } from "./errors";
import { chooseMachineImage } from "../infra/ami";
import { defaultAgentBundlePath } from "../common/paths";
import type { PlatformName } from "./platform";
import { checkPresignedExpiry } from "../job/presigned";
import { checkNamedSubject } from "../job/input-templates";
import { archiveKindFor } from "../job/input-file";
import { autoBudget, resolveAutoInstanceType, type InstanceTypeChoice } from "./instance-type-auto";
import { suggestedCompareCommand } from "./auto-compare-command";

/** Holds `--instance-type auto`'s place while the rest of the spec is read; replaced by the choice before anyone sees it. */
const PROVISIONAL_INSTANCE_TYPE = "auto0.provisional";

/**
 * The job-describing flags every run command (single job or batch) accepts, by the camelCase names yargs gives them
 * (`instanceType`): one per key of job/config-keys.ts, plus `config`, the file they override.
 */
export type SpecFlags = { config?: string } & Record<string, unknown>;

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
  const misplaced = document && typeof document === "object" ? Object.keys(document).filter((key) => key.includes(":")) : [];
  if (misplaced.length > 0) {
    throw new BadInputError(`config file ${resolved}: ${misplaced.join(", ")} must sit under "config:", as in Pulumi.dev.yaml (config:\n  ${misplaced[0]}: ...)`);
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
 * `KEY=VALUE` pairs to a JSON map (env, labels). With `fromEnvironment` (`--env`), a bare `NAME` takes the value of
 * the driver's own environment variable, as `docker run -e NAME` does: a secret then never appears on a command line,
 * where every user of the machine could read it in the process table.
 */
function pairsToJson(pairs: string[], flag: string, fromEnvironment: boolean): string {
  const map: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq < 0 && fromEnvironment && /^[A-Za-z_][A-Za-z0-9_]*$/.test(pair)) {
      const value = process.env[pair];
      if (value === undefined) throw new BadInputError(`--${flag} ${pair}: no such variable in the environment (give NAME=VALUE, or export ${pair} first)`);
      map[pair] = value;
      continue;
    }
    if (eq <= 0) throw new BadInputError(`--${flag} "${pair}": expected NAME=VALUE${fromEnvironment ? " or the NAME of a variable in the environment" : ""}`);
    map[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return JSON.stringify(map);
}

/** `--input` values: URLs or JSON objects; several make a list. */
function inputsToConfig(inputs: string[]): string {
  if (inputs.length === 1) return inputs[0];
  return JSON.stringify(inputs.map((value) => (value.trim().startsWith("{") ? JSON.parse(value) : value)));
}

/** A flag's value as the config value of its key (the same text a config file would hold). */
function flagToConfig(flag: KeyFlag, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const list = (Array.isArray(value) ? value : [value]).map(String);
  if (list.length === 0) return undefined;
  switch (flag.form) {
    case "text":
    case "number":
    case "boolean":
      return String(value);
    case "pairs":
    case "env-pairs":
      return pairsToJson(list, flag.name, flag.form === "env-pairs");
    case "list":
      return JSON.stringify(list);
    case "inputs":
      return inputsToConfig(list);
  }
}

/** Flags as config-key overrides (same names as the file), for every job key that has its flag set. */
export function flagOverrides(flags: SpecFlags): Record<string, string | undefined> {
  return Object.fromEntries(SPEC_SOURCE_KEYS.map((entry) => [entry.key, flagToConfig(entry.flag, flags[camelCase(entry.flag.name)])]));
}

/** A deployment key's flag value, if given. */
function deployFlag(flags: SpecFlags, entry: { flag: KeyFlag }): string | undefined {
  const value = flags[camelCase(entry.flag.name)];
  return value === undefined ? undefined : String(value);
}

/** A key's value as the run gives it: its flag, else the config file's key. */
export function flagOrFile(flags: SpecFlags, file: ConfigFile, entry: { key: string; flag: KeyFlag }): string | undefined {
  return deployFlag(flags, entry) ?? file.lookup(entry.key);
}

/** Where a manifest path is relative to: where the command runs for one named by flag, the config file's folder for one in it. */
export function manifestBase(flags: SpecFlags, file: ConfigFile): string {
  return deployFlag(flags, SOURCE_KEYS.manifest) !== undefined || !file.path ? process.cwd() : path.dirname(file.path);
}

export interface ResolvedJob {
  spec: JobSpec;
  platform: PlatformName;
  agentBundlePath: string;
  /** Backend URL from the file (`cloudcompute:backend`); PULUMI_BACKEND_URL still wins. */
  backend?: string;
  configPath?: string;
  /** `--allow-cross-region`: inputs in another region than the instance are accepted. */
  allowCrossRegion: boolean;
  /** `--input-profile`: the local AWS profile that signs `s3://` inputs with access presigned. */
  inputProfile?: string;
  /** `--lease-seconds`: the period of the subject's run lease (common/lease.ts). */
  leaseSeconds: number;
  /** Lines to print before the job starts (e.g. a presigned URL that does not say when it expires). */
  warnings: string[];
  /** `--instance-type auto`: the type chosen, from which comparison (spec.instance.type holds the type). */
  instanceTypeChoice?: InstanceTypeChoice;
}

/** What an NDA package (driver/nda-package.ts) gives the reading of the config: its own manifest. */
export interface PackageSources {
  packageManifest?: { name: string; text: string };
  ndaPackage?: boolean;
}

export interface ResolveExtras extends PackageSources {
  /** A subjects-file row's input URLs (input name → URL, "" for the first input) and where the row is. */
  inputOverrides?: { urls: Record<string, string>; where: string };
  /** Signs `s3://` inputs with access presigned (driver/input-signing.ts): the URL, valid `seconds`. */
  presign?: (url: string, seconds: number) => string;
}


/** What is common to the jobs of one run: the config file and the flags. A batch resolves once per subject. */
export function resolveJob(flags: SpecFlags, now: Date = new Date(), extra: ResolveExtras = {}): ResolvedJob {
  const file = readConfigFile(flags.config);
  // A job id in the file names the stack `pulumi up` deploys by hand; every driver run is a new job.
  // `{subject}` in input URLs and globs is the job's subject, so one config file serves a whole batch.
  const lookup: ConfigLookup = (key) => (key === "cloudcompute:jobId" ? undefined : file.lookup(key));
  let spec: JobSpec;
  let platform: PlatformName;
  let agentBundle: string | undefined;
  let instanceTypeChoice: InstanceTypeChoice | undefined;
  try {
    checkConfigKeys(file.keys);
    const base = manifestBase(flags, file);
    const overrides = flagOverrides(flags);
    const typeKey = "cloudcompute:instanceType";
    const budget = autoBudget(overrides[typeKey] ?? file.lookup(typeKey), flags.timeBudget);
    if (budget !== undefined) overrides[typeKey] = PROVISIONAL_INSTANCE_TYPE;
    // The package's own manifest (driver/nda-package.ts) stands in for --manifest when none is given.
    const packaged = extra.packageManifest;
    if (packaged && overrides[SOURCE_KEYS.manifest.key] === undefined && file.lookup(SOURCE_KEYS.manifest.key) === undefined) overrides[SOURCE_KEYS.manifest.key] = packaged.name;
    const readFile = (name: string) => (packaged && name === packaged.name ? packaged.text : fs.readFileSync(path.resolve(base, name), "utf8"));
    spec = specFromConfig(lookup, overrides, now, { readFile, ndaPackage: extra.ndaPackage, presign: extra.presign });
    const platformFlag = deployFlag(flags, DEPLOY_KEYS.platform);
    const deploy = deployConfigFromConfig((key) => (key === DEPLOY_KEYS.platform.key ? platformFlag : undefined) ?? lookup(key));
    platform = deploy.platform;
    if (budget !== undefined) {
      const job = { image: spec.container.image, command: spec.container.command, platform, region: spec.instance.region, spot: spec.instance.spot };
      const subject = spec.subject;
      instanceTypeChoice = resolveAutoInstanceType(job, budget, { suggestion: () => suggestedCompareCommand(flags, subject, platform) });
      spec = parseJobSpec({ ...spec, instance: { ...spec.instance, type: instanceTypeChoice.chosen } }, "--instance-type auto");
    }
    checkPlatformSupport(spec, platform);
    // What the stack program would refuse during `up` (a GPU on a type without one), refused before anything exists.
    if (platform === "aws") {
      try {
        chooseMachineImage(spec);
      } catch (err) {
        throw new ConfigError([`cloudcompute:gpus: ${(err as Error).message}`]);
      }
    }
    const bundleFlag = deployFlag(flags, DEPLOY_KEYS.agentBundle);
    agentBundle = bundleFlag ? path.resolve(bundleFlag) : deploy.agentBundlePath;
  } catch (err) {
    if (err instanceof ConfigError) {
      const source = file.path ? ` (config file ${path.relative(process.cwd(), file.path) || file.path}, flags override it)` : " (from flags; no config file)";
      throw new BadInputError(`${err.message}${source}`);
    }
    if (err instanceof SyntaxError) throw new BadInputError(`bad JSON in a flag: ${err.message}`);
    throw err;
  }
  if (extra.inputOverrides) spec = withInputOverrides(spec, extra.inputOverrides.urls, extra.inputOverrides.where);
  // A presigned URL that dies while the job could still run fails the job hours in: refused now, nothing created.
  const expiry = checkPresignedExpiry(spec.inputs, spec.limits, now);
  if (expiry.problems.length > 0) throw new BadInputError(`presigned input(s) would expire before the job could end:\n  ${expiry.problems.join("\n  ")}`);
  // A bundle path from the file is relative to the file.
  const agentBundlePath = agentBundle ? path.resolve(file.path ? path.dirname(file.path) : process.cwd(), agentBundle) : defaultAgentBundlePath();
  return { spec, platform, agentBundlePath, backend: deployFlag(flags, DEPLOY_KEYS.backend) ?? file.lookup(DEPLOY_KEYS.backend.key), configPath: file.path, warnings: [...expiry.warnings, ...ndaBucketWarnings(spec, platform)], ...accessOptions(flags, file), ...(instanceTypeChoice ? { instanceTypeChoice } : {}) };
}

/**
 * NDA's own buckets (`NDAR_Central_*`) grant nothing to an account's roles since NDA retired its token generator: an
 * instance role reading them fails on the instance, after the boot was paid for. Said before launch; not refused, as
 * an account NDA gave access to (or a test bucket of that name) may exist.
 */
function ndaBucketWarnings(spec: JobSpec, platform: PlatformName): string[] {
  if (platform !== "aws") return [];
  return spec.inputs
    .filter((input) => input.access !== "presigned" && /^s3:\/\/NDAR_Central_/i.test(input.url))
    .map((input) => `input "${input.name}" reads ${input.url} with access "${input.access}": NDA's buckets grant no access to your account's roles (or to unsigned requests), so unless NDA gave your account access the job will fail on the instance; take NDA's files through their presigned URLs with --nda-package ID (docs/running-jobs.md)`);
}

/** `--input-profile` (or the file's cloudcompute:inputProfile), before the job is resolved: signing needs it first. */
export function inputProfileOf(flags: SpecFlags): string | undefined {
  return accessOptions(flags, readConfigFile(flags.config)).inputProfile;
}

/** The driver-only input-access keys (flag, else file). */
function accessOptions(flags: SpecFlags, file: ConfigFile): { allowCrossRegion: boolean; inputProfile?: string; leaseSeconds: number } {
  const allow = deployFlag(flags, DEPLOY_KEYS.allowCrossRegion) ?? file.lookup(DEPLOY_KEYS.allowCrossRegion.key) ?? "false";
  if (!/^(true|false)$/i.test(allow.trim())) throw new BadInputError(`${DEPLOY_KEYS.allowCrossRegion.key} "${allow}": expected ${DEPLOY_KEYS.allowCrossRegion.expected}`);
  const profile = deployFlag(flags, DEPLOY_KEYS.inputProfile) ?? file.lookup(DEPLOY_KEYS.inputProfile.key);
  const lease = (deployFlag(flags, DEPLOY_KEYS.leaseSeconds) ?? file.lookup(DEPLOY_KEYS.leaseSeconds.key) ?? DEPLOY_KEYS.leaseSeconds.defaultValue).trim();
  if (!/^\d+$/.test(lease) || +lease < 10 || +lease > 3600) throw new BadInputError(`${DEPLOY_KEYS.leaseSeconds.key} "${lease}": expected ${DEPLOY_KEYS.leaseSeconds.expected}`);
  return { allowCrossRegion: allow.trim().toLowerCase() === "true", ...(profile ? { inputProfile: profile } : {}), leaseSeconds: Number(lease) };
}

/** The spec with a subjects-file row's URLs in place of the config's, validated again. */
export function withInputOverrides(spec: JobSpec, overrides: Record<string, string>, where: string): JobSpec {
  const names = spec.inputs.map((input) => input.name);
  const unknown = Object.keys(overrides).filter((name) => name !== "" && !names.includes(name));
  if (unknown.length > 0) throw new BadInputError(`${where}: no input named ${unknown.map((n) => `"${n}"`).join(", ")} in the config (its inputs: ${names.join(", ")})`);
  if (overrides[""] !== undefined && names.length > 0 && overrides[names[0]] !== undefined) {
    throw new BadInputError(`${where}: both input and input.${names[0]} give the URL of input "${names[0]}" (the first): leave one of them empty`);
  }
  const inputs = spec.inputs.map((input, index) => {
    const url = overrides[input.name] ?? (index === 0 ? overrides[""] : undefined);
    if (url === undefined) return input;
    // The row's URL replaces the config's: the config's origin and checksum described another file.
    try {
      checkNamedSubject({ url }, spec.subject);
    } catch (err) {
      throw new BadInputError(`${where}: ${(err as Error).message}`);
    }
    // The config's extract was written for its own URLs: a row's archive of another kind would fail on the instance.
    const kind = archiveKindFor(url, "auto");
    if (input.extract !== "auto" && input.extract !== "none" && kind !== "none" && kind !== input.extract) {
      throw new BadInputError(`${where}: ${url} is a ${kind} archive by its name, but the config's input "${input.name}" says extract: ${input.extract}: set its extract to auto (each file by its own name)`);
    }
    const { sha256: _sha, origin: _origin, ...rest } = input;
    return { ...rest, url, origin: where };
  });
  try {
    return parseJobSpec({ ...spec, inputs }, where);
  } catch (err) {
    if (err instanceof JobSpecError) {
      // A row gives only a URL; its access comes from the config's input, which is where a fix goes.
      const hint = err.problems.some((p) => /access/.test(p)) ? ": a subjects file gives only URLs; set the input's access in the config (cloudcompute:inputs), the same for every row" : "";
      throw new BadInputError(`${where}: ${err.problems.join("; ")}${hint}`);
    }
    throw err;
  }
}
