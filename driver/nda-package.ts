/**
 * `--nda-package ID`: a job's inputs from an NDA data package. The package's own fmriresults01.txt (or
 * datastructure_manifest.txt, or the user's --manifest) picks the subject's files with the manifest filters; the
 * package metadata file maps each picked S3 URL to its package file id; presigned URLs are requested for exactly
 * those ids, per job and just before staging (they expire), and become `access: presigned` inputs. The URLs live only
 * in the spec that is staged (a Pulumi secret); everything printed shows them redacted.
 */
import { camelCase, SOURCE_KEYS } from "../job/config-keys";
import { JobSpec, type InputSpec } from "../job/spec";
import { BadInputError } from "./errors";
import { asDriverError, DEFAULT_NDA_API, NdaClient, type PackageFileMetadata } from "./nda-client";
import { checkPresignedExpiry, presignedExpiry } from "../job/presigned";
import { takeNdaCredentials } from "./nda-credentials";
import { checkNamedSubject } from "../job/input-templates";
import { flagOrFile, readConfigFile, type ResolveExtras, type ResolvedJob, type SpecFlags } from "./options";
import { resolveJobSigned, type InputSigner } from "./input-signing";

/** The manifests a package may hold, in the order they are preferred (fmriresults01 names subject, type, session). */
export const PACKAGE_MANIFESTS = ["fmriresults01.txt", "datastructure_manifest.txt"];

export interface LoadedPackage {
  packageId: string;
  client: NdaClient;
  /** The metadata file's rows by S3 URL. */
  byUrl: Map<string, PackageFileMetadata>;
  /** The package's own manifest (name as shown in errors and origins, and its text), when it holds one. */
  manifest?: { name: string; text: string };
  fileCount: number;
}

/** Package info, its listing, its metadata file, and (if wanted) its own manifest read through a presigned URL. */
export async function loadNdaPackage(client: NdaClient, packageId: string, opts: { needManifest: boolean }): Promise<LoadedPackage> {
  try {
    await client.packageInfo(packageId);
    const listing = await client.listFiles(packageId);
    const metadata = await client.metadata(packageId);
    const byUrl = new Map(metadata.map((row) => [row.s3Url, row]));
    let manifest: LoadedPackage["manifest"];
    if (opts.needManifest) {
      const file = PACKAGE_MANIFESTS.map((name) => listing.find((f) => f.alias === name)).find(Boolean);
      if (!file) {
        throw new BadInputError(
          `NDA package ${packageId} holds neither ${PACKAGE_MANIFESTS.join(" nor ")} (${listing.length} files listed): give the package's manifest with --manifest FILE`,
        );
      }
      const url = (await client.presign(packageId, [file.fileId])).get(file.fileId)!;
      manifest = { name: `nda package ${packageId}: ${file.alias}`, text: (await client.download(url, `${file.alias} of package ${packageId}`)).toString("utf8") };
    }
    return { packageId, client, byUrl, manifest, fileCount: listing.length };
  } catch (err) {
    throw asDriverError(err);
  }
}

/**
 * The package's own manifest, for `--all-subjects` with `--nda-package` and no `--manifest`: every subject it holds
 * files of for the run's filters is then a job (driver/subjects.ts). Undefined when the run names no package or gives
 * its own manifest. The credentials stay in the environment: the batch's workers read them too.
 */
export async function packageManifestFor(flags: SpecFlags, opts: PackageOptions = {}): Promise<{ name: string; text: string } | undefined> {
  const request = packageRequest(flags);
  if (!request || request.manifestGiven) return undefined;
  return (await openPackage(flags, request, { ...opts, keepEnv: true })).manifest;
}

/**
 * The spec with each input that names a package file turned into a presigned one: URLs for exactly these files, the
 * package file id and the expiry in its `origin`. A picked file the package does not hold is bad input.
 */
export async function presignPackageInputs(spec: JobSpec, pkg: LoadedPackage): Promise<JobSpec> {
  const picked = spec.inputs.filter((input) => input.access !== "presigned" && (pkg.byUrl.has(input.url) || input.origin !== undefined));
  const missing = picked.filter((input) => !pkg.byUrl.has(input.url));
  if (missing.length > 0) {
    throw new BadInputError(
      `NDA package ${pkg.packageId} does not hold ${missing.map((input) => `${input.url}${input.origin ? ` (${input.origin})` : ""}`).join(", ")}: is the manifest this package's, and does the package include the subject's associated files?`,
    );
  }
  if (picked.length === 0) return spec;
  let urls: Map<string, string>;
  try {
    urls = await pkg.client.presign(pkg.packageId, picked.map((input) => pkg.byUrl.get(input.url)!.fileId));
  } catch (err) {
    throw asDriverError(err);
  }
  const inputs: InputSpec[] = spec.inputs.map((input) => {
    const row = picked.includes(input) ? pkg.byUrl.get(input.url) : undefined;
    if (!row) return input;
    const url = urls.get(row.fileId)!;
    // The metadata file maps the manifest's URL to a file id: the file NDA signs must still be this subject's.
    try {
      for (const named of [url.split(/[?#]/)[0], row.alias]) checkNamedSubject({ url: named }, spec.subject);
    } catch (err) {
      throw new BadInputError(`NDA package ${pkg.packageId}, file id ${row.fileId} (listed for ${row.s3Url}): ${(err as Error).message}`);
    }
    const expiry = presignedExpiry(url);
    const origin = [`nda package ${pkg.packageId}, file id ${row.fileId}, ${row.s3Url}`, input.origin, expiry ? `URL expires ${expiry.toISOString()}` : undefined].filter(Boolean).join("; ");
    return { ...input, url, access: "presigned", origin: origin.slice(0, 1000) };
  });
  const checked = JobSpec.safeParse({ ...spec, inputs });
  if (!checked.success) throw new BadInputError(`the presigned inputs from NDA package ${pkg.packageId} are not valid: ${checked.error.issues.map((i) => i.message).join("; ")}`);
  return checked.data;
}

export interface PackageOptions {
  now?: Date;
  /** A batch parent keeps NDA_USERNAME/NDA_PASSWORD in its environment for its workers. */
  keepEnv?: boolean;
  /** false: check that the package holds the job's files, ask for no URL (a batch parent; each worker asks for its own). */
  presign?: boolean;
  /** Extra CA certificates for the NDA service (tests in one process; the CLI takes NODE_EXTRA_CA_CERTS). */
  ca?: Buffer;
}

/** The package id, API URL and credentials file a run names (flags over the config file), if it names a package. */
export function packageRequest(flags: SpecFlags): { packageId: string; api: string; manifestGiven: boolean } | undefined {
  const file = readConfigFile(flags.config);
  const value = (entry: (typeof SOURCE_KEYS)[keyof typeof SOURCE_KEYS]) => flagOrFile(flags, file, entry)?.trim() || undefined;
  const packageId = value(SOURCE_KEYS.ndaPackage);
  if (packageId === undefined) return undefined;
  if (!/^\d{1,19}$/.test(packageId)) throw new BadInputError(`${SOURCE_KEYS.ndaPackage.key} "${packageId}": expected ${SOURCE_KEYS.ndaPackage.expected}`);
  const api = value(SOURCE_KEYS.ndaApi) ?? DEFAULT_NDA_API;
  // The NDA password goes to this URL with every call: a config file someone shared must not be able to send it
  // elsewhere. Another host is taken from the command line only, where the user types it.
  const fromFile = flags[camelCase(SOURCE_KEYS.ndaApi.flag.name)] === undefined && file.lookup(SOURCE_KEYS.ndaApi.key) !== undefined;
  if (fromFile && hostOf(api) !== hostOf(DEFAULT_NDA_API)) {
    throw new BadInputError(
      `${SOURCE_KEYS.ndaApi.key} in ${file.path} names ${hostOf(api) ?? "an unreadable URL"}, not ${hostOf(DEFAULT_NDA_API)}: your NDA password would be sent there. ` +
        `A config file may only name NDA's own host; give another one (a proxy, a test service) with --${SOURCE_KEYS.ndaApi.flag.name} on the command line`,
    );
  }
  return { packageId, api, manifestGiven: value(SOURCE_KEYS.manifest) !== undefined };
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).host.toLowerCase();
  } catch {
    return undefined;
  }
}

/**
 * The run's job: resolveJob with the subjects-file row (`extra`) and the `--input-profile` signer, plus — when the run
 * names a package — the package's files as presigned inputs, their expiry checked like any presigned URL's.
 */
export async function resolvePackageJob(flags: SpecFlags, opts: PackageOptions = {}, extra: ResolveExtras = {}, signer?: InputSigner): Promise<ResolvedJob> {
  const now = opts.now ?? new Date();
  const request = packageRequest(flags);
  if (!request) return resolveJobSigned(flags, now, extra, signer);
  const pkg = await openPackage(flags, request, opts);
  const resolved = await resolveJobSigned(flags, now, { ...extra, packageManifest: pkg.manifest, ndaPackage: true }, signer);
  if (opts.presign === false) {
    const absent = resolved.spec.inputs.filter((input) => input.origin !== undefined && input.access !== "presigned" && !pkg.byUrl.has(input.url));
    if (absent.length > 0) throw new BadInputError(`NDA package ${pkg.packageId} does not hold ${absent.map((input) => `${input.url} (${input.origin})`).join(", ")}`);
    return resolved;
  }
  const spec = await presignPackageInputs(resolved.spec, pkg);
  // NDA does not document how long its URLs live (and temporary credentials may end them sooner): checked as any other.
  const expiry = checkPresignedExpiry(spec.inputs, spec.limits, now);
  if (expiry.problems.length > 0) throw new BadInputError(`presigned input(s) from NDA package ${pkg.packageId} would expire before the job could end:\n  ${expiry.problems.join("\n  ")}`);
  return { ...resolved, spec, warnings: [...new Set([...resolved.warnings, ...expiry.warnings])] };
}

/** Credentials, client and package, once per process (a batch's dry run resolves every subject against one). */
const opened = new Map<string, Promise<LoadedPackage>>();

export function openPackage(flags: SpecFlags, request: NonNullable<ReturnType<typeof packageRequest>>, opts: PackageOptions = {}): Promise<LoadedPackage> {
  const cacheKey = `${request.api} ${request.packageId} ${request.manifestGiven}`;
  let pkg = opened.get(cacheKey);
  if (!pkg) {
    const credentials = takeNdaCredentials(flags.ndaCredentials === undefined ? undefined : String(flags.ndaCredentials), { keepEnv: opts.keepEnv });
    const pollMs = Number(process.env.CLOUDCOMPUTE_NDA_POLL_MS ?? 15_000);
    const client = new NdaClient({ baseUrl: request.api, credentials, pollMs, ca: opts.ca });
    pkg = loadNdaPackage(client, request.packageId, { needManifest: !request.manifestGiven });
    opened.set(cacheKey, pkg);
    pkg.catch(() => opened.delete(cacheKey));
  }
  return pkg;
}
