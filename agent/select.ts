/** Selection: the file(s) of a fetched input the container gets, chosen by the spec's glob. */
import picomatch from "picomatch";
import { JobFailure } from "./errors";

/** The files matching `pattern` (all of them without one); none, or several when only one is allowed, is a JobFailure. */
export function selectFiles(files: string[], pattern: string | undefined, allowMultiple: boolean, label: string): string[] {
  if (!pattern) return files;
  const isMatch = picomatch(pattern, { dot: true });
  const matches = files.filter((file) => isMatch(file)).sort();
  const sample = (list: string[]) => list.slice(0, 5).join(", ") + (list.length > 5 ? `, ... (${list.length} in all)` : "");
  if (matches.length === 0) {
    throw new JobFailure(
      "no-matching-file",
      `${label}: no file matches "${pattern}" among ${files.length} file(s)${files.length ? ` (${sample(files)})` : ""}`,
    );
  }
  if (matches.length > 1 && !allowMultiple) {
    throw new JobFailure(
      "multiple-matching-files",
      `${label}: ${matches.length} files match "${pattern}" (${sample(matches)}); set allowMultiple or narrow the glob`,
    );
  }
  return matches;
}
