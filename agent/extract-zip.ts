/**
 * Zip extraction under the same rules as tar (extract.ts): every entry goes through the same `Extraction`, so names
 * leaving the directory, links leading out, writes through links and special files are refused alike. A zip's
 * directory sits at its end, so the archive is read from a file on disk (inputs.ts downloads it first).
 *
 * Checked before a byte is written, from the central directory: names, types, encryption, compression method,
 * duplicates (zip readers disagree on which copy wins, so the content would be ambiguous; tar's order decides),
 * entries whose data overlap (the high-ratio "zip bomb" reuses one compressed stream for many entries) and the total
 * size against the free disk. yauzl then holds each entry to its declared size while inflating.
 */
import { promises as fsp } from "node:fs";
import type { Readable } from "node:stream";
import * as yauzl from "yauzl";
import { mapLimit } from "../common/retry";
import { JobFailure } from "./errors";
import { Extraction, relativeInside } from "./extract";

/** Longest symlink text read from an entry (Linux's PATH_MAX). */
const MAX_LINK_TEXT = 4096;
/**
 * Most entries an input zip may hold: the plan keeps every entry in memory, and a crafted ZIP64 directory of millions
 * of entries would run the agent out of memory before a byte is written. Study archives hold hundreds.
 */
export const MAX_ZIP_ENTRIES = 250_000;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

type Kind = "file" | "directory" | "symlink" | "special";

interface Planned {
  entry: yauzl.Entry;
  name: string;
  rel: string;
  kind: Kind;
  mode: number;
}

/** The entry's type: unix mode bits when the archive was made on unix, else a trailing "/" or the DOS directory bit. */
function kindOf(entry: yauzl.Entry, name: string): { kind: Kind; mode: number } {
  const unix = entry.versionMadeBy >> 8 === 3 ? entry.externalFileAttributes >>> 16 : 0;
  const type = unix & S_IFMT;
  if (type === S_IFLNK) return { kind: "symlink", mode: unix };
  if (type === S_IFDIR || (type === 0 && (name.endsWith("/") || (entry.externalFileAttributes & 0x10) !== 0))) return { kind: "directory", mode: unix };
  if (type === S_IFREG || type === 0) return { kind: "file", mode: unix };
  return { kind: "special", mode: unix };
}

function localDataStart(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<number> {
  return new Promise((resolve, reject) =>
    zip.readLocalFileHeader(entry, { minimal: true }, (err, header) => (err ? reject(err) : resolve(header.fileDataStart))),
  );
}

async function readSmall(stream: Readable, limit: number, refuse: () => never): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      stream.destroy();
      refuse();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Extract the zip file `archive` into `destDir`; the regular files written (relative POSIX paths, sorted). */
export async function extractZip(archive: string, destDir: string, label: string): Promise<string[]> {
  // decodeStrings false: names are decoded and checked here, by the same rule as tar's, so the refusal names the entry.
  const zip = await yauzl.openPromise(archive, { autoClose: false, decodeStrings: false, validateEntrySizes: true, strictFileNames: false });
  try {
    const extraction: Extraction = new Extraction(destDir, label);
    const plan = await planEntries(zip, extraction, label);
    await checkLayout(zip, plan, extraction, destDir, label);
    for (const { entry, name, rel, kind, mode } of plan) {
      if (kind === "directory") {
        await extraction.directory(name, rel);
      } else if (kind === "symlink") {
        const text = await readSmall(await zip.openReadStreamPromise(entry), MAX_LINK_TEXT, () =>
          extraction.refuse(name, `is a symbolic link longer than ${MAX_LINK_TEXT} bytes`),
        );
        await extraction.symlink(name, rel, text);
      } else {
        await extraction.file(name, rel, await zip.openReadStreamPromise(entry), 0o644 | (mode & 0o111));
      }
    }
    extraction.checkLinks();
    return [...extraction.files].sort();
  } finally {
    zip.close();
  }
}

/** Read the central directory and refuse any entry that may not be extracted. */
async function planEntries(zip: yauzl.ZipFile, extraction: Extraction, label: string): Promise<Planned[]> {
  const plan: Planned[] = [];
  const seen = new Set<string>();
  if (zip.entryCount > MAX_ZIP_ENTRIES) {
    throw new JobFailure("corrupt-archive", `${label}: the zip archive lists ${zip.entryCount} entries, more than the ${MAX_ZIP_ENTRIES} an input may hold`);
  }
  for await (const entry of zip.eachEntry()) {
    const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
    if (name.includes("\0")) extraction.refuse(name.replace(/\0/g, "\\0"), "has a NUL byte in its name");
    const rel = relativeInside(name);
    if (rel === undefined) extraction.refuse(name, "points outside the input directory");
    const { kind, mode } = kindOf(entry, name);
    if (kind === "special") extraction.refuse(name, "is a special file (device, fifo or socket), which an input archive may not contain");
    if (entry.isEncrypted()) extraction.refuse(name, "is encrypted, and the agent has no password to read it");
    if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
      extraction.refuse(name, `uses compression method ${entry.compressionMethod} (only stored and deflate can be read)`);
    }
    if (rel === "") continue;
    if (seen.has(rel)) extraction.refuse(name, "appears twice in the archive (zip readers disagree on which copy counts)");
    seen.add(rel);
    plan.push({ entry, name, rel, kind, mode });
  }
  return plan;
}

/** No two entries share bytes, and the whole fits on the disk. */
async function checkLayout(zip: yauzl.ZipFile, plan: Planned[], extraction: Extraction, destDir: string, label: string): Promise<void> {
  // Local headers are read a few at a time: all at once holds one pending read per entry.
  const spans = await mapLimit(plan, 16, async (p) => ({ p, start: p.entry.relativeOffsetOfLocalHeader, end: (await localDataStart(zip, p.entry)) + p.entry.compressedSize }));
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].start < spans[i - 1].end) {
      extraction.refuse(spans[i].p.name, `overlaps the data of "${spans[i - 1].p.name}" (a zip bomb's trick)`);
    }
  }
  const total = plan.reduce((sum, p) => sum + (p.kind === "file" ? p.entry.uncompressedSize : 0), 0);
  const disk = await fsp.statfs(destDir);
  const free = disk.bavail * disk.bsize;
  if (total > free) {
    throw new JobFailure("out-of-disk", `${label}: the zip archive unpacks to ${total} bytes, but only ${free} bytes are free in ${destDir}`);
  }
}
