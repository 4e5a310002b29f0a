/**
 * Synthetic ABCD-like inputs: a real NIfTI-1 image (348-byte header, `n+1` magic, data at offset 352) inside
 * `sub-<GUID>/ses-<session>/anat/sub-<GUID>_ses-<session>_run-01_T1w.nii`, tarred and gzipped like an MPROC-T1 archive.
 * Used by the demo, the benchmarks and the tests.
 */
import { gzipSync } from "node:zlib";
import * as tar from "tar-stream";

export interface NiftiOptions {
  dims?: [number, number, number];
  /** Voxel value generator (uint8). */
  voxel?: (index: number) => number;
}

/** A single-file NIfTI-1 (.nii) image of uint8 voxels. */
export function makeNifti(opts: NiftiOptions = {}): Buffer {
  const [x, y, z] = opts.dims ?? [16, 16, 8];
  const voxels = x * y * z;
  const buf = Buffer.alloc(352 + voxels);
  buf.writeInt32LE(348, 0); // sizeof_hdr
  const dim = [3, x, y, z, 1, 1, 1, 1];
  dim.forEach((v, i) => buf.writeInt16LE(v, 40 + 2 * i));
  buf.writeInt16LE(2, 70); // datatype: DT_UNSIGNED_CHAR
  buf.writeInt16LE(8, 72); // bitpix
  [0, 1, 1, 1, 0, 0, 0, 0].forEach((v, i) => buf.writeFloatLE(v, 76 + 4 * i)); // pixdim (qfac 0 → 1), 1 mm voxels
  buf.writeFloatLE(352, 108); // vox_offset
  buf.writeFloatLE(1, 112); // scl_slope
  buf.writeUInt8(10, 123); // xyzt_units: mm + s
  buf.write("synthetic T1w for cloudcompute tests", 148, "latin1"); // descrip
  buf.write("n+1\0", 344, "latin1"); // magic
  const voxel = opts.voxel ?? ((i) => (i * 7) % 251);
  for (let i = 0; i < voxels; i++) buf[352 + i] = voxel(i);
  return buf;
}

export const ABCD_SESSION = "baselineYear1Arm1";

export function t1wPath(guid: string, session = ABCD_SESSION): string {
  return `sub-${guid}/ses-${session}/anat/sub-${guid}_ses-${session}_run-01_T1w.nii`;
}

export function abcdArchiveName(guid: string, session = ABCD_SESSION): string {
  return `${guid}_${session}_ABCD-MPROC-T1_20180101120000.tgz`;
}

export async function makeTar(files: Record<string, Buffer | string>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  const dirs = new Set<string>();
  for (const [name, content] of Object.entries(files)) {
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/") + "/";
      if (!dirs.has(dir)) {
        dirs.add(dir);
        pack.entry({ name: dir, type: "directory", mode: 0o755 });
      }
    }
    pack.entry({ name, mode: 0o644 }, typeof content === "string" ? Buffer.from(content) : content);
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface AbcdArchive {
  tgz: Buffer;
  name: string;
  t1w: string;
  nifti: Buffer;
}

/** An MPROC-T1-like archive: the T1w image plus side files that a glob must not pick. */
export async function makeAbcdArchive(guid: string, opts: NiftiOptions & { extra?: Record<string, Buffer | string> } = {}): Promise<AbcdArchive> {
  const nifti = makeNifti(opts);
  const t1w = t1wPath(guid);
  const tarball = await makeTar({
    [t1w]: nifti,
    [`sub-${guid}/ses-${ABCD_SESSION}/anat/sub-${guid}_ses-${ABCD_SESSION}_run-01_T1w.json`]: JSON.stringify({ Modality: "MR" }),
    [`sub-${guid}/ses-${ABCD_SESSION}/README.txt`]: "synthetic ABCD-like data\n",
    ...opts.extra,
  });
  return { tgz: gzipSync(tarball), name: abcdArchiveName(guid), t1w, nifti };
}
