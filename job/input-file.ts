/**
 * What an input's URL says about the file it names: its archive kind (for `extract: auto`) and, for inputs that are
 * not extracted, the file name the agent writes. Shared by spec validation (bad input is refused before anything
 * exists) and the agent (which checks again: a spec can be written by hand).
 */

export type ArchiveKind = "none" | "tar" | "tgz" | "zip";

/** The last path segment of an s3:// or https:// URL, without query string; percent-decoded for https only. */
export function urlFileName(url: string): string {
  const withoutQuery = url.split(/[?#]/)[0];
  const last = withoutQuery.split("/").pop() ?? "";
  // S3 keys are literal ("%2F" is three characters of the key); https paths are percent-encoded.
  if (!/^https?:/i.test(url)) return last;
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

/**
 * The file name an input that is not extracted is written under, or an error message saying why the URL's name
 * cannot be one: it must be a single path segment (a decoded `..%2F` would otherwise lead out of the directory).
 */
export function inputFileName(url: string): { name: string } | { error: string } {
  const name = urlFileName(url);
  if (name === "" || name === "." || name === "..") {
    return { error: `the URL ends in "${name}", which is not a usable file name` };
  }
  if (/[/\\\0]/.test(name)) {
    return { error: `the URL's last segment decodes to "${name.replace(/\0/g, "\\0")}", which is not a single file name` };
  }
  return { name };
}

/** The archive kind an `auto` input gets from its URL's file name. */
export function archiveKindFor(url: string, mode: ArchiveKind | "auto"): ArchiveKind {
  if (mode !== "auto") return mode;
  const name = urlFileName(url).toLowerCase();
  if (name.endsWith(".tar.gz") || name.endsWith(".tgz")) return "tgz";
  if (name.endsWith(".tar")) return "tar";
  if (name.endsWith(".zip")) return "zip";
  return "none";
}

/** How the agent writes an input: extracted as `kind`, or (kind "none") as the single file `fileName`. */
export type InputLayout = { kind: "tar" | "tgz" | "zip" } | { kind: "none"; fileName: string };

/** Why an input cannot be written, and which spec field is at fault. */
export interface InputLayoutProblem {
  field: "extract" | "url";
  error: string;
}

/**
 * The one decision on how an input lands on disk, or why it cannot: a plain file needs a usable name from its URL.
 * (Archives are extracted: tar and tgz while the bytes stream in, zip once downloaded, its directory being at its end.)
 */
export function inputLayout(url: string, mode: ArchiveKind | "auto"): InputLayout | InputLayoutProblem {
  const kind = archiveKindFor(url, mode);
  if (kind !== "none") return { kind };
  const named = inputFileName(url);
  if ("error" in named) return { field: "url", error: `${named.error} (the file name comes from it)` };
  return { kind, fileName: named.name };
}
