/**
 * NDA credentials for the package service: NDA_USERNAME/NDA_PASSWORD from the environment, or a file
 * (`--nda-credentials FILE`, mode 0600 or stricter) of `username=...` and `password=...` lines. They live only in the
 * driver's memory: never in a config key, the spec, a log, an error message or a process's command line, and they are
 * taken out of the driver's environment once read so the engine and a local agent never inherit them.
 */
import * as fs from "node:fs";
import { BadInputError } from "./errors";

export interface NdaCredentials {
  /** NDA user names are case-insensitive; the service expects them lower-cased (nda-tools does the same). */
  username: string;
  password: string;
}

export const NDA_ENV = { username: "NDA_USERNAME", password: "NDA_PASSWORD" } as const;

/** Parse a credentials file's text: `username=…` and `password=…` lines, `#` comments and blank lines ignored. */
export function parseCredentialsFile(text: string, file: string): NdaCredentials {
  const values: Record<string, string> = {};
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    const name = eq > 0 ? line.slice(0, eq).trim().toLowerCase() : "";
    // The line is never quoted back: it may be the password itself.
    if (name !== "username" && name !== "password") throw new BadInputError(`NDA credentials file ${file}, line ${index + 1}: expected username=... or password=...`);
    values[name] = line.slice(eq + 1).trim();
  }
  if (!values.username || !values.password) throw new BadInputError(`NDA credentials file ${file}: needs both a username= and a password= line`);
  return { username: values.username.toLowerCase(), password: values.password };
}

/** Read a credentials file, refusing one that others may read (group or world bits set). */
export function readCredentialsFile(file: string): NdaCredentials {
  // One open, then the checks and the read on that descriptor: a file swapped in between (a FIFO, a readable copy)
  // cannot slip past. O_NONBLOCK keeps a FIFO from blocking the open.
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new BadInputError(`NDA credentials file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new BadInputError(`NDA credentials file ${file} is not a regular file`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
      throw new BadInputError(`NDA credentials file ${file} has mode ${mode}: other users could read your NDA password; make it private with  chmod 600 ${file}`);
    }
    if (typeof process.getuid === "function" && stat.uid !== process.getuid()) {
      throw new BadInputError(`NDA credentials file ${file} belongs to another user (uid ${stat.uid}): use a file of your own, mode 600`);
    }
    return parseCredentialsFile(fs.readFileSync(fd, "utf8"), file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The credentials from the file if one is named, else from the environment. `keepEnv` leaves the environment
 * variables in place (a batch parent hands them to its workers); otherwise they are removed once read.
 */
export function takeNdaCredentials(file: string | undefined, opts: { keepEnv?: boolean } = {}): NdaCredentials {
  const fromEnv = { username: process.env[NDA_ENV.username], password: process.env[NDA_ENV.password] };
  if (!opts.keepEnv) {
    delete process.env[NDA_ENV.username];
    delete process.env[NDA_ENV.password];
  }
  if (file !== undefined) return readCredentialsFile(file);
  if (!fromEnv.username || !fromEnv.password) {
    throw new BadInputError(
      `--nda-package needs your NDA credentials: set ${NDA_ENV.username} and ${NDA_ENV.password} in the environment, or name a private file (chmod 600) of username=... and password=... lines with --nda-credentials FILE`,
    );
  }
  return { username: fromEnv.username.toLowerCase(), password: fromEnv.password };
}
