/**
 * Input templates: one config serves a whole study. Placeholders in an input's URL (and its other text fields) are
 * filled per job — `{subject}`, `{session}`, `{bids_subject}` (`sub-<label>`) — and `{manifest}` stands for the
 * files an NDA manifest lists for the subject (job/nda-manifest.ts). This is the one place they are filled, used by
 * `pulumi up` (index.ts) and the driver alike, so a literal `{subject}` never reaches an instance.
 */
import { findSubjectFiles, parseNdaManifest, type PickMode } from "./nda-manifest";
import { bidsSubject } from "./subject";

export const INPUT_PLACEHOLDERS = ["subject", "session", "bids_subject", "manifest"] as const;

export interface TemplateContext {
  subject: string;
  session?: string;
  /** The manifest query, when `cloudcompute:manifest` is set. */
  manifest?: { path: string; text: string; dataType?: string; pick: PickMode };
}

export { bidsSubject };

type RawInput = Record<string, unknown>;

/** A problem with an input template: its message stands on its own (the caller prefixes the config key). */
export class TemplateError extends Error {}

/**
 * Fill the placeholders of every input. An input whose URL is `{manifest}` becomes one input per file the manifest
 * gives (named `<name>`, or `<name>-2`, `<name>-3`, … after the first), each with an `origin` saying where it came
 * from. Throws an Error naming the problem (the caller prefixes the config key).
 */
export function fillInputTemplates(inputs: RawInput[], context: TemplateContext): RawInput[] {
  if (context.manifest && !inputs.some((input) => input.url === "{manifest}")) {
    // Otherwise the manifest (or an NDA package's) would choose nothing and the job would read the configured URLs.
    throw new TemplateError(
      `the manifest ${context.manifest.path} (--manifest, or --nda-package's own) fills no input: give the input it fills the url "{manifest}" (in the config: url: "{manifest}"; or replace the config's inputs with --input '{"name":"t1","url":"{manifest}","extract":"tgz","select":"**/*_T1w.nii"}')`,
    );
  }
  const filled: RawInput[] = [];
  for (const input of inputs) {
    if (input.url === "{manifest}") {
      filled.push(...fromManifest(input, context));
      continue;
    }
    if (typeof input.url === "string" && input.url.includes("{manifest}")) throw new TemplateError(`"{manifest}" must be the whole url of an input, not part of it`);
    const done = fillFields(input, context);
    checkNamedSubject(done, context.subject);
    filled.push(done);
  }
  return filled;
}

/** The last manifest parsed: a batch resolves every subject's job against the same text. */
let lastParsed: { text: string; path: string; files: ReturnType<typeof parseNdaManifest> } | undefined;
function parsedManifest(text: string, path: string): ReturnType<typeof parseNdaManifest> {
  if (lastParsed?.text !== text || lastParsed.path !== path) lastParsed = { text, path, files: parseNdaManifest(text, path) };
  return lastParsed.files;
}

function fromManifest(input: RawInput, context: TemplateContext): RawInput[] {
  const manifest = context.manifest;
  if (!manifest) throw new TemplateError(`an input's url is "{manifest}" but no manifest is given (cloudcompute:manifest / --manifest FILE)`);
  const files = findSubjectFiles(parsedManifest(manifest.text, manifest.path), { subject: context.subject, dataType: manifest.dataType, session: context.session, pick: manifest.pick }, manifest.path);
  return files.map((file, index) => {
    const name = typeof input.name === "string" ? input.name : "input";
    const details = [file.dataType, file.session].filter(Boolean).join(", ");
    const origin = `${manifest.path} line ${file.line}${details ? ` (${details})` : ""}`;
    // The row's subjectkey picked it; a file named for another subject (a hostile or mistaken row) is still refused.
    try {
      checkNamedSubject({ url: file.url }, context.subject);
    } catch (err) {
      throw new TemplateError(`${manifest.path} line ${file.line}: ${(err as Error).message}`);
    }
    return { ...fillFields({ ...input, url: "" }, context), name: index === 0 ? name : `${name}-${index + 1}`, url: file.url, origin };
  });
}

/**
 * An NDA archive's name carries its subject. A URL naming another subject's GUID (a config written for one subject,
 * run for another or for a batch) would process that subject's image and file the results under this one's name.
 */
export function checkNamedSubject(input: RawInput, subject: string): void {
  if (typeof input.url !== "string") return;
  const named = [...input.url.matchAll(/NDAR_?INV[A-Z0-9]{8}/gi)].map((m) => m[0].replace(/_/, "").toUpperCase());
  const own = subject.toUpperCase().replace(/^NDAR_INV/, "NDARINV");
  const other = named.find((guid) => guid !== own);
  if (other) {
    throw new TemplateError(
      `the url names subject ${other}, but this job's subject is ${subject}: write {subject} where the GUID goes, or find each subject's file with a manifest (--manifest), so a job never reads another subject's data`,
    );
  }
}

/** Fill placeholders in the string fields of one input; an unknown one in the URL, or `{session}` without a session, is an error. */
function fillFields(input: RawInput, context: TemplateContext): RawInput {
  const values: Record<string, string | undefined> = { subject: context.subject, session: context.session, bids_subject: bidsSubject(context.subject) };
  const out: RawInput = {};
  for (const [field, value] of Object.entries(input)) {
    out[field] =
      typeof value !== "string"
        ? value
        : value.replace(/\{([a-z_]+)\}/g, (whole, name: string) => {
            // Outside the URL, braces may be a glob's own ({nii,gz}): only the URL's unknown ones are errors.
            if (!(name in values)) {
              if (field !== "url") return whole;
              throw new TemplateError(`unknown placeholder ${whole} in url (known: ${INPUT_PLACEHOLDERS.map((p) => `{${p}}`).join(" ")})`);
            }
            const filledValue = values[name];
            if (filledValue === undefined) throw new TemplateError(`${whole} in ${field} needs a session: set cloudcompute:session (--session)`);
            return filledValue;
          });
  }
  return out;
}
