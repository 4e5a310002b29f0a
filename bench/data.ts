/**
 * Benchmark data, generated once into the cache directory and reused across runs:
 * - a subject archive shaped like an ABCD MPROC .tgz (`sub-<GUID>/ses-<session>/{anat,dwi,func}/*.nii`), NIfTI-1
 *   volumes whose voxels are noise inside a head-shaped ellipsoid and fainter noise outside it, so gzip gets them to
 *   about three quarters of their size: compression matters, as with real scans, but the data stays mostly
 *   incompressible and the archive is over 1 GiB;
 * - an output tree for the upload case: one 1 GiB result file plus 1,000 small files in nested directories.
 * Each is built under a temporary name and renamed into place, so an interrupted generation is never reused.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import * as tar from "tar-stream";
import { GiB, MiB } from "./util";

/** Bump when the generated content changes, so stale caches are not reused. */
const DATA_VERSION = 2;

export const BENCH_SUBJECT = "NDARINVBENCH001";
const SESSION = "baselineYear1Arm1";

interface Volume {
  path: string;
  dims: [number, number, number, number];
}

/** The archive's members: about 1.5 GiB of int16 voxels, a typical ABCD session's anatomy, diffusion and fMRI. */
function subjectVolumes(): Volume[] {
  const base = `sub-${BENCH_SUBJECT}/ses-${SESSION}`;
  const file = (modality: string, suffix: string) => `${base}/${modality}/sub-${BENCH_SUBJECT}_ses-${SESSION}_${suffix}.nii`;
  return [
    { path: file("anat", "run-01_T1w"), dims: [256, 256, 256, 1] },
    { path: file("anat", "run-02_T1w"), dims: [256, 256, 256, 1] },
    { path: file("anat", "run-01_T2w"), dims: [256, 256, 256, 1] },
    { path: file("dwi", "run-01_dwi"), dims: [140, 140, 81, 103] },
    ...[1, 2, 3, 4].map((run): Volume => ({ path: file("func", `task-rest_run-0${run}_bold`), dims: [90, 90, 60, 300] })),
  ];
}

export interface SubjectArchive {
  path: string;
  bytes: number;
  sha256: string;
  uncompressedBytes: number;
  files: number;
  /** The member the container would get (`**\/*_run-01_T1w.nii`). */
  t1Member: string;
}

export interface OutputTree {
  dir: string;
  bytes: number;
  files: number;
}

/** A NIfTI-1 single-file header (348 bytes + 4-byte extension flag), int16 data at offset 352. */
function niftiHeader(dims: Volume["dims"]): Buffer {
  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0); // sizeof_hdr
  const rank = dims[3] > 1 ? 4 : 3;
  header.writeInt16LE(rank, 40); // dim[0]
  dims.forEach((d, i) => header.writeInt16LE(d, 42 + 2 * i));
  for (let i = 4; i < 7; i++) header.writeInt16LE(1, 42 + 2 * i);
  header.writeInt16LE(4, 70); // datatype DT_INT16
  header.writeInt16LE(16, 72); // bitpix
  header.writeFloatLE(1, 76); // pixdim[0] (qfac)
  for (let i = 1; i <= 3; i++) header.writeFloatLE(1, 76 + 4 * i); // 1 mm voxels
  header.writeFloatLE(rank === 4 ? 0.8 : 0, 76 + 16); // TR in seconds for time series
  header.writeFloatLE(352, 108); // vox_offset
  header.writeFloatLE(1, 112); // scl_slope
  header.writeUInt8(10 | 8, 123); // xyzt_units: mm + s
  header.writeInt16LE(1, 252); // qform_code: scanner
  header.write("n+1\0", 344, "latin1");
  return header;
}

/**
 * The voxels of one volume, a z-slab at a time: inside an ellipsoid 12 random bits per voxel (tissue), outside 8
 * (background noise). Random bytes are masked in place, which keeps generation far faster than gzip.
 */
function* volumeSlabs(dims: Volume["dims"]): Generator<Buffer> {
  const [nx, ny, nz, nt] = dims;
  const sliceBytes = nx * ny * 2;
  const slicesPerSlab = Math.max(1, Math.floor((4 * MiB) / sliceBytes));
  // Half-widths of the ellipsoid row by row: voxels x in [cx - w, cx + w) are tissue.
  const halfWidth = new Int32Array(ny * nz);
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      const dy = (y - ny / 2) / (ny * 0.48);
      const dz = (z - nz / 2) / (nz * 0.48);
      const rest = 1 - dy * dy - dz * dz;
      halfWidth[z * ny + y] = rest > 0 ? Math.floor(Math.sqrt(rest) * nx * 0.45) : 0;
    }
  }
  for (let t = 0; t < nt; t++) {
    for (let z0 = 0; z0 < nz; z0 += slicesPerSlab) {
      const slices = Math.min(slicesPerSlab, nz - z0);
      const slab = randomBytes(slices * sliceBytes);
      for (let s = 0; s < slices; s++) {
        for (let y = 0; y < ny; y++) {
          const row = (s * ny + y) * nx * 2;
          const w = halfWidth[(z0 + s) * ny + y];
          const from = nx / 2 - w;
          const to = nx / 2 + w;
          for (let x = 0; x < nx; x++) {
            const hi = row + 2 * x + 1;
            if (x >= from && x < to) slab[hi] &= 0x0f; // 0..4095
            else {
              slab[hi] = 0; // 0..255
            }
          }
        }
      }
      yield slab;
    }
  }
}

function cacheFile(cacheDir: string, name: string): string {
  return join(cacheDir, "bench", `v${DATA_VERSION}`, name);
}

/** The cached subject archive, generated (about a minute) when absent. */
export async function subjectArchive(cacheDir: string, log: (line: string) => void): Promise<SubjectArchive> {
  const path = cacheFile(cacheDir, `${BENCH_SUBJECT}_${SESSION}_ABCD-MPROC-BENCH.tgz`);
  const metaPath = `${path}.json`;
  if (existsSync(path) && existsSync(metaPath)) return JSON.parse(readFileSync(metaPath, "utf8")) as SubjectArchive;

  mkdirSync(dirname(path), { recursive: true });
  const volumes = subjectVolumes();
  log(`generating the subject archive ${path} (${volumes.length} NIfTI files, once; about a minute)`);
  const pack = tar.pack();
  let uncompressedBytes = 0;
  const feed = (async () => {
    for (const volume of volumes) {
      const [nx, ny, nz, nt] = volume.dims;
      const size = 352 + nx * ny * nz * nt * 2;
      uncompressedBytes += size;
      const entry = pack.entry({ name: volume.path, size, mode: 0o644, mtime: new Date("2026-01-01T00:00:00Z") });
      await pipeline(Readable.from([niftiHeader(volume.dims), ...volumeSlabs(volume.dims)]), entry);
    }
    pack.finalize();
  })();
  const hash = createHash("sha256");
  let bytes = 0;
  const partial = `${path}.partial`;
  const gzip = createGzip({ level: 6 });
  gzip.on("data", (chunk: Buffer) => {
    hash.update(chunk);
    bytes += chunk.length;
  });
  await Promise.all([feed, pipeline(pack, gzip, createWriteStream(partial))]);
  const archive: SubjectArchive = {
    path,
    bytes,
    sha256: hash.digest("hex"),
    uncompressedBytes,
    files: volumes.length,
    t1Member: volumes[0].path,
  };
  if (bytes < GiB) throw new Error(`the generated archive is only ${bytes} bytes; the benchmark needs at least 1 GiB`);
  renameSync(partial, path);
  writeFileSync(metaPath, JSON.stringify(archive, null, 2));
  return archive;
}

/** The cached output tree: `seg/…_seg.nii.gz` of 1 GiB (random: compressed results do not compress) and 1,000 small files. */
export async function outputTree(cacheDir: string, log: (line: string) => void): Promise<OutputTree> {
  const dir = cacheFile(cacheDir, "outputs");
  const metaPath = `${dir}.json`;
  if (existsSync(dir) && existsSync(metaPath)) return JSON.parse(readFileSync(metaPath, "utf8")) as OutputTree;

  log(`generating the output tree ${dir} (1 GiB + 1,000 small files, once)`);
  const partial = `${dir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(join(partial, "seg"), { recursive: true });
  let bytes = 0;
  async function* randomChunks(total: number) {
    for (let done = 0; done < total; done += 8 * MiB) yield randomBytes(Math.min(8 * MiB, total - done));
  }
  await pipeline(Readable.from(randomChunks(GiB)), createWriteStream(join(partial, "seg", `${BENCH_SUBJECT}_seg.nii.gz`)));
  bytes += GiB;
  const smallFiles = 1000;
  for (let i = 0; i < smallFiles; i++) {
    // 1-32 KiB, spread over 20 directories like per-region statistics and QC snippets.
    const size = 1024 + ((i * 7919) % (31 * 1024));
    const sub = join(partial, "stats", `region-${String(i % 20).padStart(2, "0")}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `measure-${String(i).padStart(4, "0")}.tsv`), randomBytes(size));
    bytes += size;
  }
  renameSync(partial, dir);
  const tree: OutputTree = { dir, bytes, files: smallFiles + 1 };
  writeFileSync(metaPath, JSON.stringify(tree, null, 2));
  return tree;
}

/** SHA-256 of a file, for checking what came back. */
export async function fileSha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}
