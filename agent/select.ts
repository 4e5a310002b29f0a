/** Selection: the file(s) of a fetched input the container gets, chosen by the spec's glob, and their hashes. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import picomatch from "picomatch";
import { mapLimit } from "../common/retry";
import { JobFailure } from "./errors";

/** One file the command gets, for the provenance record. */
export interface FileDigest {
  /** Relative to the input's directory (POSIX separators). */
  path: string;
  sha256: string;
  bytes: number;
}

/** SHA-256 and size of `files` (relative to `dir`), read from disk: what the container is given, as it is. */
export async function digestFiles(dir: string, files: string[]): Promise<FileDigest[]> {
  return await mapLimit(files, 4, async (file) => {
    const hash = createHash("sha256");
    let bytes = 0;
    await pipeline(createReadStream(path.join(dir, file), { highWaterMark: 1024 * 1024 }), async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        hash.update(chunk);
        bytes += chunk.length;
      }
    });
    return { path: file, sha256: hash.digest("hex"), bytes };
  });
}

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
