/**
 * The `--compare` command `--instance-type auto` suggests when it has no comparison to choose from: the user's own
 * run as given (config file, platform, region, image, command...), for one subject, without what `--compare` refuses
 * (--instance-type, --job-id, a batch's subjects), so that it runs as printed and its comparison is the one auto
 * then finds.
 */
import { ALL_KEYS, camelCase } from "../job/config-keys";
import { PRICE_TABLE } from "../job/price-table";
import type { SpecFlags } from "./options";

/** A spread of sizes and families worth comparing for most pipelines. */
export const SUGGESTED_TYPES = ["m5.xlarge", "c5.2xlarge", "m5.2xlarge"] as const;

/** Flags --compare sets itself or refuses. */
const LEFT_OUT = new Set(["subject", "job-id", "instance-type"]);

/** `value` as one shell word. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9_./:=@,+%-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

function flagArgs(name: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (typeof value === "boolean") return [value ? `--${name}` : `--no-${name}`];
  // A value starting with a dash would be read as a flag: given as --name=VALUE.
  return (Array.isArray(value) ? value : [value]).map((item) => (String(item).startsWith("-") ? shellWord(`--${name}=${String(item)}`) : `--${name} ${shellWord(String(item))}`));
}

/**
 * `npm run job -- --compare ...` for `subject` with the flags the user gave. On local every type needs its price
 * (compute there costs nothing): the built-in us-east-1 list prices. Values of secret maps (--env NAME=VALUE) are
 * not printed: the bare NAME takes $NAME from the environment instead.
 */
export function suggestedCompareCommand(flags: SpecFlags, subject: string, platform: string): string {
  const args: string[] = [];
  args.push(...flagArgs("config", flags.config), ...flagArgs("nda-credentials", flags.ndaCredentials ?? flags["nda-credentials"]));
  for (const entry of ALL_KEYS) {
    const name = entry.flag.name;
    if (LEFT_OUT.has(name)) continue;
    let value = flags[camelCase(name)] ?? flags[name];
    if (entry.secret && entry.flag.form === "env-pairs" && value !== undefined) value = (Array.isArray(value) ? value : [value]).map((pair) => String(pair).split("=")[0]);
    args.push(...flagArgs(name, value));
  }
  const types = SUGGESTED_TYPES.map((type) => (platform === "local" ? `${type}=${PRICE_TABLE.onDemandUsdPerHour[type]}` : type));
  return `npm run job -- --subject ${shellWord(subject)} ${args.join(" ")}${args.length > 0 ? " " : ""}--compare ${types.join(",")}`;
}
