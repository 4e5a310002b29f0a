/**
 * Zip archives written byte by byte (APPNOTE 6.3: local headers, central directory, end record), so tests can craft
 * what no zip tool writes: names with "..", overlapping entries, lying sizes, encrypted flags, special files.
 */
import { crc32, deflateRawSync } from "node:zlib";

export interface ZipEntry {
  name: string;
  body?: string | Buffer;
  /** 0 stored, 8 deflate (default), anything else as given (the data stays stored). */
  method?: number;
  /** Unix mode with type bits (default 0o100644, directories 0o040755 when the name ends in "/"). */
  mode?: number;
  /** General purpose flags (bit 0: encrypted, bit 11: UTF-8 name). */
  flags?: number;
  /** Central record points at the local header of this earlier entry instead of its own (overlap). */
  sameDataAs?: number;
  /** Uncompressed size the central directory declares, written as ZIP64 when past 32 bits. */
  declaredSize?: number;
}

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

export const symlinkEntry = (name: string, target: string): ZipEntry => ({ name, body: target, mode: 0o120777, method: 0 });
export const fileEntry = (name: string, body = "payload", method = 8): ZipEntry => ({ name, body, method });
export const dirEntry = (name: string): ZipEntry => ({ name: name.endsWith("/") ? name : `${name}/`, mode: 0o040755, method: 0 });

export function craftZip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  const offsets: number[] = [];
  const sizes: Array<{ crc: number; csize: number }> = [];
  let offset = 0;
  entries.forEach((entry, i) => {
    const data = Buffer.from(entry.body ?? "");
    const method = entry.method ?? 8;
    const stored = method === 8 ? deflateRawSync(data) : data;
    const crc = crc32(data);
    const name = Buffer.from(entry.name);
    const flags = entry.flags ?? 0;
    const mode = entry.mode ?? (entry.name.endsWith("/") ? 0o040755 : 0o100644);
    const local = Buffer.concat([u32(0x04034b50), u16(20), u16(flags), u16(method), u16(0), u16(0x21), u32(crc), u32(stored.length), u32(data.length), u16(name.length), u16(0), name, stored]);
    offsets.push(offset);
    sizes.push({ crc, csize: stored.length });
    locals.push(local);
    offset += local.length;
    const at = entry.sameDataAs ?? i;
    const declared = entry.declaredSize ?? data.length;
    const zip64 = declared > 0xfffffffe;
    const extra = zip64 ? Buffer.concat([u16(0x0001), u16(8), (() => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(declared)); return b; })()]) : Buffer.alloc(0);
    const src = sizes[at];
    centrals.push(
      Buffer.concat([
        u32(0x02014b50), u16((3 << 8) | 45), u16(zip64 ? 45 : 20), u16(flags), u16(method), u16(0), u16(0x21),
        u32(src.crc), u32(src.csize), u32(zip64 ? 0xffffffff : declared), u16(name.length), u16(extra.length), u16(0),
        u16(0), u16(0), u32(mode * 0x10000), u32(offsets[at]), name, extra,
      ]),
    );
  });
  const central = Buffer.concat(centrals);
  const end = Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(central.length), u32(offset), u16(0)]);
  return Buffer.concat([...locals, central, end]);
}

/**
 * `zip` with its end record replaced by a ZIP64 one that claims `entryCount` entries (the central directory itself is
 * unchanged): what a crafted archive of millions of entries announces before a reader holds any of them.
 */
export function claimEntries(zip: Buffer, entryCount: number): Buffer {
  const endAt = zip.length - 22;
  const centralSize = zip.readUInt32LE(endAt + 12);
  const centralOffset = zip.readUInt32LE(endAt + 16);
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };
  const record = Buffer.concat([u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(entryCount), u64(entryCount), u64(centralSize), u64(centralOffset)]);
  const locator = Buffer.concat([u32(0x07064b50), u32(0), u64(endAt), u32(1)]);
  const end = Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(0xffff), u16(0xffff), u32(0xffffffff), u32(0xffffffff), u16(0)]);
  return Buffer.concat([zip.subarray(0, endAt), record, locator, end]);
}
