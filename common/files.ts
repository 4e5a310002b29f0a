/** Files on this machine written so that no reader ever sees half of one. */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";

/**
 * `text` to `file`, whole or not at all: into a new temp file of this writer's own beside it (two writers, a batch's
 * workers say, never share one; never written through a file or link already at its name), then renamed into place.
 * The temp file is removed if anything fails; the error is the caller's.
 */
export function writeFileWhole(file: string, text: string, options: { mode?: number } = {}): void {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    fs.writeFileSync(temp, text, { flag: "wx", ...(options.mode !== undefined ? { mode: options.mode } : {}) });
    fs.renameSync(temp, file);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}
