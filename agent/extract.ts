/**
 * Streaming tar extraction that cannot write outside its directory.
 *
 * Checking each entry's name or link text alone is not enough (node-tar's CVE-2021-32803, -32804, -37701, -37712,
 * -37713): a symlink to `.` and links through it to `..`, a link replaced by a file, a directory replaced by a link.
 * So every parent of every entry is checked for real (lstat) and must be a directory this extraction made or found
 * as a plain directory — never a symlink, so nothing is ever written through one; nothing replaces a symlink or a
 * directory; files are created with O_EXCL (which also refuses a symlink in their place); hardlinks must name a
 * regular file inside; and once the archive has ended every symlink is resolved through the others and must stay
 * inside. Any violation fails the job with `corrupt-archive` naming the entry: an archive that tries this is not
 * data anybody should compute on, so nothing is quietly dropped.
 */
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as tar from "tar-stream";
import { JobFailure } from "./errors";

const MiB = 1024 * 1024;
/** Symlink hops followed while resolving one link (Linux's own limit is 40). */
const MAX_LINK_HOPS = 40;

/** `name` as a relative POSIX path inside the destination ("" for the root), or undefined when it leaves it. */
export function relativeInside(name: string): string | undefined {
  const normalised = path.posix.normalize(name.replace(/\\/g, "/")).replace(/\/+$/, "");
  if (normalised === "." || normalised === "") return "";
  if (path.posix.isAbsolute(normalised) || normalised === ".." || normalised.startsWith("../")) return undefined;
  return normalised.replace(/^(\.\/)+/, "");
}

/**
 * Where a link's text leads when every link on the way is followed: the relative path inside the destination, or
 * undefined when some step leaves it. `links` holds every symlink extracted so far (relative path → its text).
 */
export function resolveLink(linkPath: string, target: string, links: ReadonlyMap<string, string>): string | undefined {
  if (path.posix.isAbsolute(target)) return undefined;
  let hops = 0;
  const walk = (base: string[], text: string): string[] | undefined => {
    const resolved = [...base];
    for (const part of text.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (resolved.length === 0) return undefined;
        resolved.pop();
        continue;
      }
      resolved.push(part);
      const link = links.get(resolved.join("/"));
      if (link === undefined) continue;
      if (++hops > MAX_LINK_HOPS || path.posix.isAbsolute(link)) return undefined;
      const followed = walk(resolved.slice(0, -1), link);
      if (followed === undefined) return undefined;
      resolved.splice(0, resolved.length, ...followed);
    }
    return resolved;
  };
  const parts = walk(path.posix.dirname(linkPath) === "." ? [] : path.posix.dirname(linkPath).split("/"), target);
  return parts?.join("/");
}

/** One archive's extraction into `destDir` under the rules above; tar (here) and zip (extract-zip.ts) entries go through it. */
export class Extraction {
  readonly files = new Set<string>();
  /** Directories known to be real directories (made here or found as such): their lstat is not repeated. */
  private readonly dirs = new Set<string>([""]);
  readonly links = new Map<string, string>();

  constructor(
    private readonly destDir: string,
    private readonly label: string,
  ) {}

  refuse(entry: string, why: string): never {
    throw new JobFailure("corrupt-archive", `${this.label}: archive entry "${entry}" ${why}; the archive is refused`);
  }

  private abs(rel: string): string {
    return path.join(this.destDir, rel);
  }

  private async lstat(rel: string) {
    try {
      return await fsp.lstat(this.abs(rel));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** Make every parent of `rel` a real directory, refusing to pass through anything else. */
  async ensureParents(entry: string, rel: string): Promise<void> {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (this.dirs.has(dir)) continue;
      const stat = await this.lstat(dir);
      if (stat?.isSymbolicLink()) this.refuse(entry, `goes through the symbolic link "${dir}"`);
      if (stat && !stat.isDirectory()) this.refuse(entry, `goes through "${dir}", which is not a directory`);
      if (!stat) await fsp.mkdir(this.abs(dir));
      this.dirs.add(dir);
    }
  }

  /** What is at `rel` now, refusing to replace a symlink or a directory with something else. */
  private async existing(entry: string, rel: string, replacement: "file" | "directory" | "link"): Promise<"none" | "file" | "directory"> {
    const stat = await this.lstat(rel);
    if (!stat) return "none";
    if (stat.isSymbolicLink()) this.refuse(entry, "would replace a symbolic link");
    if (stat.isDirectory()) {
      if (replacement !== "directory") this.refuse(entry, "would replace a directory");
      return "directory";
    }
    if (replacement === "directory") this.refuse(entry, "would replace a file with a directory");
    return "file";
  }

  async file(entry: string, rel: string, body: Readable, mode: number): Promise<void> {
    await this.ensureParents(entry, rel);
    // A duplicate entry replaces the file (tar semantics); unlinking first never writes through a hardlink twin.
    if ((await this.existing(entry, rel, "file")) === "file") await fsp.unlink(this.abs(rel));
    await pipeline(body, createWriteStream(this.abs(rel), { flags: "wx", mode, highWaterMark: MiB }));
    this.files.add(rel);
  }

  async directory(entry: string, rel: string): Promise<void> {
    await this.ensureParents(entry, rel);
    if ((await this.existing(entry, rel, "directory")) === "none") await fsp.mkdir(this.abs(rel));
    this.dirs.add(rel);
  }

  async symlink(entry: string, rel: string, target: string): Promise<void> {
    if (!target || path.posix.isAbsolute(target)) this.refuse(entry, `is a symbolic link to the absolute path "${target}"`);
    if (resolveLink(rel, target, this.links) === undefined) this.refuse(entry, `is a symbolic link to "${target}", outside the input directory`);
    await this.ensureParents(entry, rel);
    if ((await this.existing(entry, rel, "link")) === "file") this.refuse(entry, "would replace a file with a symbolic link");
    await fsp.symlink(target, this.abs(rel));
    this.links.set(rel, target);
  }

  async hardlink(entry: string, rel: string, linkname: string): Promise<void> {
    const target = relativeInside(linkname);
    if (!target) this.refuse(entry, `is a hard link to "${linkname}", outside the input directory`);
    // The target's own parents must be real directories too: a link through a symlink names a file elsewhere.
    await this.ensureParents(entry, target);
    const stat = await this.lstat(target);
    if (!stat?.isFile()) this.refuse(entry, `is a hard link to "${linkname}", which is not a file extracted before it`);
    await this.ensureParents(entry, rel);
    if ((await this.existing(entry, rel, "file")) === "file") await fsp.unlink(this.abs(rel));
    await fsp.link(this.abs(target), this.abs(rel));
    this.files.add(rel);
  }

  /** Links are resolved again with the final set: a later link can change where an earlier one leads. */
  checkLinks(): void {
    for (const [rel, target] of this.links) {
      if (resolveLink(rel, target, this.links) === undefined) this.refuse(rel, `is a symbolic link to "${target}", which leads outside the input directory`);
    }
  }
}

/** Extract a tar stream into `destDir`; the regular files written (relative POSIX paths, sorted). */
export async function extractTar(source: Readable, destDir: string, label: string): Promise<string[]> {
  const extract = tar.extract();
  const extraction: Extraction = new Extraction(destDir, label); // typed, so refuse() narrows
  const consume = (async () => {
    for await (const entry of extract) {
      const { name, type, linkname, mode } = entry.header;
      const rel = relativeInside(name);
      if (rel === undefined) extraction.refuse(name, "points outside the input directory");
      if (rel === "") {
        entry.resume();
        continue;
      }
      switch (type) {
        case "file":
        case "contiguous-file":
          await extraction.file(name, rel, entry as unknown as Readable, 0o644 | ((mode ?? 0) & 0o111));
          continue;
        case "directory":
          await extraction.directory(name, rel);
          break;
        case "symlink":
          await extraction.symlink(name, rel, linkname ?? "");
          break;
        case "link":
          await extraction.hardlink(name, rel, linkname ?? "");
          break;
        default:
          extraction.refuse(name, `is a ${type ?? "special file"}, which an input archive may not contain`);
      }
      entry.resume();
    }
    extraction.checkLinks();
  })();
  const feed = pipeline(source, extract as unknown as NodeJS.WritableStream);
  const [fed, consumed] = await Promise.allSettled([feed, consume]);
  // The root cause first: a failed write (ENOSPC) or a refused entry makes the feed fail with a "premature close".
  if (consumed.status === "rejected" && !(fed.status === "rejected" && fed.reason instanceof JobFailure)) {
    throw consumed.reason;
  }
  if (fed.status === "rejected") throw fed.reason;
  return [...extraction.files].sort();
}
