/**
 * NDA manifests to a subject's files. A user who downloaded an NDA data package has its manifests: `fmriresults01.txt`
 * (one row per image: `subjectkey`, the S3 URL in `derived_files` or `file_source`, the type in `session_det`,
 * `image_description` or `scan_type`) and `datastructure_manifest.txt` (`manifest_name`, `associated_file`,
 * `dataset_id`). For ABCD a subject's files sit in several buckets and their names carry a timestamp, so they cannot
 * be built by string formatting: they are looked up here.
 *
 * NDA's format: tab-separated, every value quoted, and a second header row of descriptions under the column names.
 * `subjectkey` is spelled `NDAR_INV…` while file names say `NDARINV…`; both match the same subject.
 */
import { parseSubject } from "./subject";

export const PICK_MODES = ["error", "latest", "all"] as const;
export type PickMode = (typeof PICK_MODES)[number];

/** One file a manifest lists. */
export interface ManifestFile {
  /** 1-based line in the manifest file. */
  line: number;
  /** The canonical subject id (`NDARINV…`), from `subjectkey` or the file name. */
  subject?: string;
  url: string;
  /** e.g. `ABCD-MPROC-T1`. */
  dataType?: string;
  /** e.g. `baselineYear1Arm1`. */
  session?: string;
  /** The `YYYYMMDDhhmmss` stamp in the file name: orders several submissions of one image. */
  stamp?: string;
}

export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ManifestError";
  }
}

const URL_COLUMNS = ["derived_files", "file_source", "associated_file"];
const TYPE_COLUMNS = ["session_det", "image_description", "scan_type"];
const SESSION_COLUMNS = ["visit", "eventname", "session"];
/** `<GUID>_<session>_<TYPE>_<stamp>.<ext>`: the ABCD file name carries all four. */
const ABCD_NAME = /^(NDAR_?INV[A-Z0-9]{8})_([A-Za-z0-9]+)_([A-Z][A-Za-z0-9]*-[A-Za-z0-9-]+?)_(\d{14})\./i;
const GUID_IN_NAME = /(NDAR_?INV[A-Z0-9]{8})/i;

/** A tab-separated line: NDA quotes every value (a quote inside is doubled). */
function cells(line: string): string[] {
  return line.split("\t").map((cell) => {
    const text = cell.trim();
    return text.length >= 2 && text.startsWith('"') && text.endsWith('"') ? text.slice(1, -1).replaceAll('""', '"') : text;
  });
}

function canonicalSubject(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  try {
    return parseSubject(raw).id;
  } catch {
    return undefined;
  }
}

/** The rows of an NDA manifest (fmriresults01-style or datastructure_manifest), one per file with an S3 URL. */
export function parseNdaManifest(text: string, source = "the manifest"): ManifestFile[] {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const header = cells(lines[0] ?? "").map((name) => name.toLowerCase());
  const column = (names: string[]) => names.map((name) => header.indexOf(name)).filter((index) => index >= 0);
  const urlColumns = column(URL_COLUMNS);
  if (urlColumns.length === 0) {
    throw new ManifestError(`${source}: no file column (expected one of ${URL_COLUMNS.join(", ")} in its first line); is it an NDA manifest such as fmriresults01.txt or datastructure_manifest.txt?`);
  }
  const subjectColumn = header.indexOf("subjectkey");
  const typeColumns = column(TYPE_COLUMNS);
  const sessionColumns = column(SESSION_COLUMNS);
  const files: ManifestFile[] = [];
  for (let i = 1; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    const row = cells(lines[i]);
    const url = urlColumns.map((index) => row[index] ?? "").find((value) => /^s3:\/\//i.test(value));
    // The description row (and any row without a file) has no S3 URL.
    if (!url) continue;
    const name = url.split("/").pop() ?? "";
    const abcd = ABCD_NAME.exec(name);
    const firstOf = (indexes: number[]) => indexes.map((index) => row[index]?.trim() ?? "").find((value) => value !== "");
    files.push({
      line: i + 1,
      subject: canonicalSubject(subjectColumn >= 0 ? row[subjectColumn] : undefined) ?? canonicalSubject(GUID_IN_NAME.exec(name)?.[1]),
      url,
      dataType: firstOf(typeColumns) ?? abcd?.[3],
      session: firstOf(sessionColumns) ?? abcd?.[2],
      stamp: abcd?.[4],
    });
  }
  return files;
}

export interface ManifestQuery {
  subject: string;
  dataType?: string;
  session?: string;
  pick: PickMode;
}

const same = (a: string | undefined, b: string) => a !== undefined && a.toLowerCase() === b.toLowerCase();
const describe = (file: ManifestFile) => `${file.url} (line ${file.line}${file.dataType ? `, ${file.dataType}` : ""}${file.session ? `, ${file.session}` : ""})`;
const distinct = (values: (string | undefined)[]) => [...new Set(values.filter((v): v is string => Boolean(v)))].sort();

/**
 * The subject's files for the query. No match is an error that says what was searched and what the manifest holds
 * for that subject instead; several matches are an error listing them unless `pick` says latest or all.
 */
export function findSubjectFiles(files: ManifestFile[], query: ManifestQuery, source = "the manifest"): ManifestFile[] {
  const subject = canonicalSubject(query.subject) ?? query.subject;
  const forSubject = files.filter((file) => file.subject === subject);
  const wanted = [query.dataType ? `data type ${query.dataType}` : "", query.session ? `session ${query.session}` : ""].filter(Boolean).join(" and ");
  if (forSubject.length === 0) {
    throw new ManifestError(`${source} lists no file for subject ${subject} (${files.length} file rows read, ${distinct(files.map((f) => f.subject)).length} subjects)`);
  }
  const matches = forSubject.filter((file) => (!query.dataType || same(file.dataType, query.dataType)) && (!query.session || same(file.session, query.session)));
  if (matches.length === 0) {
    throw new ManifestError(
      `${source} has no file for subject ${subject} with ${wanted}; for this subject it lists data types ${distinct(forSubject.map((f) => f.dataType)).join(", ") || "(none named)"} ` +
        `and sessions ${distinct(forSubject.map((f) => f.session)).join(", ") || "(none named)"}:\n    ${forSubject.map(describe).join("\n    ")}`,
    );
  }
  // A row whose subjectkey and file name name different subjects: its job would process the other subject's image.
  for (const file of matches) {
    const named = canonicalSubject(GUID_IN_NAME.exec(file.url.split("/").pop() ?? "")?.[1]);
    if (named !== undefined && named !== subject) {
      throw new ManifestError(`${source} line ${file.line}: subjectkey ${subject}, but the file name names ${named}: the manifest contradicts itself, so no job reads this file for either (${file.url})`);
    }
  }
  if (matches.length === 1 || query.pick === "all") return matches;
  if (query.pick === "latest") {
    const stamped = matches.filter((file) => file.stamp);
    const newest = stamped.reduce<ManifestFile | undefined>((best, file) => (!best || file.stamp! > best.stamp! ? file : best), undefined);
    if (newest && stamped.length === matches.length && stamped.filter((file) => file.stamp === newest.stamp).length === 1) return [newest];
    throw new ManifestError(`${source}: --pick latest cannot order these files of subject ${subject} (no distinct timestamp in their names):\n    ${matches.map(describe).join("\n    ")}`);
  }
  throw new ManifestError(
    `${source} has ${matches.length} files for subject ${subject}${wanted ? ` with ${wanted}` : ""}: ${narrowing(query)}choose with --pick latest|all:\n    ${matches.map(describe).join("\n    ")}`,
  );
}

/** The filters not given yet (a message never tells the user to give a flag they gave). */
function narrowing(query: { dataType?: string; session?: string }): string {
  const flags = [query.dataType ? "" : "--data-type", query.session ? "" : "--session"].filter(Boolean);
  return flags.length > 0 ? `narrow it with ${flags.join("/")}, or ` : "";
}

export interface SubjectFilters {
  dataType?: string;
  session?: string;
  pick: PickMode;
}

export interface SubjectSelection {
  /** Subjects with a file (or files, per `pick`) for the filters, in the manifest's order. */
  included: string[];
  /** Subjects (or rows without one) left out, each with its reason. */
  excluded: Array<{ subject: string; reason: string }>;
}

/**
 * Every subject the manifest's rows hold for the filters: a subject is included when `findSubjectFiles` would give
 * its job files, else excluded with the reason it would give (no file of that type/session, several without --pick).
 * Works over parsed rows, so any source of rows (a manifest file, an NDA package's metadata) can use it.
 */
export function subjectsInManifest(files: ManifestFile[], filters: SubjectFilters, source = "the manifest"): SubjectSelection {
  const selection: SubjectSelection = { included: [], excluded: [] };
  for (const file of files.filter((f) => !f.subject)) {
    selection.excluded.push({ subject: `(line ${file.line})`, reason: `no subject: no subjectkey and no NDA GUID in the file name ${file.url.split("/").pop()}` });
  }
  const subjects = [...new Set(files.map((file) => file.subject).filter((s): s is string => Boolean(s)))];
  for (const subject of subjects) {
    try {
      findSubjectFiles(files, { subject, ...filters }, source);
      selection.included.push(subject);
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      const reason = err.message.split("\n")[0].replace(/:$/, "");
      selection.excluded.push({ subject, reason: reason.startsWith(`${source} `) ? reason.slice(source.length + 1) : reason });
    }
  }
  if (selection.included.length === 0) {
    const wanted = [filters.dataType && `data type ${filters.dataType}`, filters.session && `session ${filters.session}`].filter(Boolean).join(" and ");
    throw new ManifestError(`${source}: no subject has a file${wanted ? ` with ${wanted}` : ""} (${subjects.length} subjects, ${selection.excluded.length} excluded)`);
  }
  return selection;
}
