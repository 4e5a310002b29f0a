/**
 * Which subjects a batch runs, and per-subject inputs: a subjects file (one subject per line, or a CSV/TSV whose
 * header may name input columns `input` and `input.NAME`), or `--all-subjects` over a manifest's rows. Every row is
 * checked before any resource exists; problems name their line.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import { SOURCE_KEYS } from "../job/config-keys";
import { ManifestError, parseNdaManifest, subjectsInManifest, type PickMode, type SubjectSelection } from "../job/nda-manifest";
import { normaliseSubject } from "../job/subject";
import { redactUrl } from "../job/spec";
import { BadInputError } from "./errors";
import { flagOrFile, manifestBase, readConfigFile, type SpecFlags } from "./options";

/** Per-subject input URLs: input name → URL; the key "" is the first configured input (the `input` column). */
export type InputOverrides = Record<string, string>;

export interface SubjectsList {
  subjects: string[];
  /** Subject → its row's input URLs (subjects without non-empty input cells have none). */
  inputs: Record<string, InputOverrides>;
  /** Subject → the line of the file that listed it, for messages. */
  lines: Record<string, number>;
}

const SUBJECT_COLUMN = /^(subject|subjectkey|participant_id|src_subject_id)$/i;
const INPUT_COLUMN = /^input(?:\.([a-z0-9][a-z0-9_-]{0,31}))?$/;

/**
 * A subjects file: one subject per line (or the first column), or a CSV/TSV with a header row
 * `subject,input[,input.NAME…]` (`subjectkey` too) whose input cells replace the config's URLs for that subject.
 */
export function readSubjectsList(file: string): SubjectsList {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new BadInputError(`subjects file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let rows: Array<{ record: string[]; info: { lines: number } }>;
  try {
    rows = parse(text.replace(/^\uFEFF/, ""), { info: true, comment: "#", skip_empty_lines: true, relax_column_count: true, relax_quotes: true, trim: true, delimiter: [",", "\t"] });
  } catch (err) {
    throw new BadInputError(`subjects file ${file}: not readable as CSV: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  let inputColumns: Array<{ index: number; name: string }> = [];
  let headed = false;
  const list: SubjectsList = { subjects: [], inputs: {}, lines: {} };
  rows.forEach(({ record, info }, index) => {
    const first = record[0] ?? "";
    if (index === 0 && SUBJECT_COLUMN.test(first)) {
      // A header: its input columns (others, e.g. NDA's extra columns, are ignored).
      headed = true;
      inputColumns = record.flatMap((cell, column) => {
        const match = INPUT_COLUMN.exec(cell);
        if (match) return [{ index: column, name: match[1] ?? "" }];
        if (/^input/i.test(cell)) problems.push(`line ${info.lines}: column "${cell}": expected input or input.NAME (NAME an input's name, lowercase)`);
        return [];
      });
      const seen = new Set<string>();
      for (const { name } of inputColumns) {
        if (seen.has(name)) problems.push(`line ${info.lines}: column "${name ? `input.${name}` : "input"}" appears twice (which cell would count?)`);
        seen.add(name);
      }
      return;
    }
    if (!first) return;
    let subject: string;
    try {
      subject = normaliseSubject(first);
    } catch (err) {
      problems.push(`line ${info.lines}: ${(err as Error).message}`);
      return;
    }
    // Without a header, extra columns are ignored: a URL there would silently give way to the config's.
    const stray = inputColumns.length === 0 && !headed ? record.slice(1).find((cell) => /^(s3|https?):\/\//i.test(cell)) : undefined;
    if (stray !== undefined) {
      problems.push(`line ${info.lines}: "${redactUrl(stray)}" is a URL, but the file has no header naming input columns: start it with subject,input (or subject,input.NAME)`);
      return;
    }
    const inputs: InputOverrides = {};
    for (const column of inputColumns) {
      const url = record[column.index] ?? "";
      if (url === "") continue; // an empty cell keeps the config's URL
      if (!/^(s3|https):\/\/[^/\s]+\/\S+$/.test(url)) {
        problems.push(`line ${info.lines}: ${column.name ? `input.${column.name}` : "input"} "${redactUrl(url)}": expected an s3:// or https:// URL naming an object`);
        continue;
      }
      inputs[column.name] = url;
    }
    const before = list.lines[subject];
    if (before !== undefined) {
      if (JSON.stringify(list.inputs[subject] ?? {}) !== JSON.stringify(inputs)) problems.push(`line ${info.lines}: subject ${subject} is listed again with other inputs than on line ${before}`);
      return;
    }
    list.subjects.push(subject);
    list.lines[subject] = info.lines;
    if (Object.keys(inputs).length > 0) list.inputs[subject] = inputs;
  });
  if (problems.length > 0) throw new BadInputError(`subjects file ${file}:\n  ${problems.join("\n  ")}`);
  if (list.subjects.length === 0) throw new BadInputError(`subjects file ${file} lists no subjects`);
  return list;
}

/**
 * `--all-subjects`: every subject of the manifest (flag or config file) with a file for the filters; the others with
 * the reason they are left out.
 */
export function allSubjectsFromManifest(flags: SpecFlags, packaged?: { name: string; text: string }): SubjectSelection {
  const file = readConfigFile(flags.config);
  const flagOr = (entry: (typeof SOURCE_KEYS)[keyof typeof SOURCE_KEYS]) => flagOrFile(flags, file, entry);
  const manifest = flagOr(SOURCE_KEYS.manifest);
  const pick = (flagOr(SOURCE_KEYS.pick) ?? "error") as PickMode;
  const filters = { dataType: flagOr(SOURCE_KEYS.dataType), session: flagOr(SOURCE_KEYS.session), pick };
  // An NDA package's own manifest (driver/nda-package.ts packageManifestFor) when the run gives none.
  if (!manifest && packaged) return selectFrom(packaged.text, packaged.name, filters);
  if (!manifest) throw new BadInputError(`--all-subjects takes its subjects from a manifest: give --manifest FILE (or ${SOURCE_KEYS.manifest.key}), or --nda-package ID`);
  const base = manifestBase(flags, file); // as resolveJob reads it
  let text: string;
  try {
    text = fs.readFileSync(path.resolve(base, manifest), "utf8");
  } catch (err) {
    throw new BadInputError(`${SOURCE_KEYS.manifest.key}: ${manifest} cannot be read: ${(err as Error).message}`);
  }
  return selectFrom(text, manifest, filters);
}

function selectFrom(text: string, source: string, filters: { dataType?: string; session?: string; pick: PickMode }): SubjectSelection {
  try {
    return subjectsInManifest(parseNdaManifest(text, source), filters, source);
  } catch (err) {
    if (err instanceof ManifestError) throw new BadInputError(`${SOURCE_KEYS.manifest.key}: ${err.message}`);
    throw err;
  }
}

/** The exclusions as a table for the terminal (BABS habit: every subject left out, with its reason). */
export function exclusionTable(selection: SubjectSelection): string {
  const lines = [`--all-subjects: ${selection.included.length} subject(s) included, ${selection.excluded.length} excluded`];
  if (selection.excluded.length > 0) {
    const width = Math.max(...selection.excluded.map((row) => row.subject.length), "subject".length);
    lines.push(`  ${"subject".padEnd(width)}  reason`, ...selection.excluded.map((row) => `  ${row.subject.padEnd(width)}  ${row.reason}`));
  }
  return lines.join("\n") + "\n";
}
