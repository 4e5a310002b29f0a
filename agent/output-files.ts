/**
 * Output collection: the files of the output directory that match the spec's globs, with symbolic links followed only
 * where they stay inside it.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import picomatch from "picomatch";

export interface LocalFile {
  /** Relative to the output directory, POSIX separators. */
  path: string;
  size: number;
}

/** A symbolic link in the outputs that was not followed: it leads outside the output directory, or nowhere. */
export interface SkippedLink {
  path: string;
  target: string;
}

/**
 * Regular files under `dir` matching any of `globs` and none of the `!globs`. A symbolic link that resolves inside
 * `dir` is an output like any other (FreeSurfer's `surf/lh.white -> lh.white.preaparc`): uploaded under the link's
 * name with its target's content; a link to a directory inside is walked once (no cycles). A link that leads outside
 * `dir` (e.g. `fsaverage -> $FREESURFER_HOME/...`) or nowhere is never followed — it could reach host files — and is
 * reported through `onSkippedLink`, so the job says what it left out instead of dropping it silently.
 */
export async function listOutputFiles(dir: string, globs: string[], onSkippedLink?: (link: SkippedLink) => void): Promise<LocalFile[]> {
  // picomatch ORs a list of globs; "!glob" entries are exclusions here, as in .gitignore-style lists.
  const include = globs.filter((g) => !g.startsWith("!"));
  const exclude = globs.filter((g) => g.startsWith("!")).map((g) => g.slice(1));
  const included = picomatch(include.length ? include : ["**"], { dot: true });
  const excluded = exclude.length ? picomatch(exclude, { dot: true }) : () => false;
  const isMatch = (file: string) => included(file) && !excluded(file);
  const found: LocalFile[] = [];
  const root = await fsp.realpath(dir);
  const inside = (real: string) => real === root || real.startsWith(root + path.sep);
  // Directories on the current path, by real path: a link back to one of them is a cycle, walked no further. A link to
  // a directory elsewhere inside is listed under the link's name too, as a copy would have it.
  const walk = async (rel: string, ancestors: ReadonlySet<string> = new Set()): Promise<void> => {
    const real = await fsp.realpath(path.join(dir, rel));
    if (ancestors.has(real)) return;
    const here = new Set(ancestors).add(real);
    const entries = await fsp.readdir(path.join(dir, rel), { withFileTypes: true });
    for (const entry of entries) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child, here);
      else if (entry.isFile() && isMatch(child)) {
        found.push({ path: child, size: (await fsp.stat(path.join(dir, child))).size });
      } else if (entry.isSymbolicLink()) {
        const full = path.join(dir, child);
        const target = await fsp.readlink(full).catch(() => "?");
        const resolved = await fsp.realpath(full).catch(() => undefined);
        if (!resolved || !inside(resolved)) {
          if (isMatch(child)) onSkippedLink?.({ path: child, target });
          continue;
        }
        const stat = await fsp.stat(resolved);
        if (stat.isDirectory()) await walk(child, here);
        else if (stat.isFile() && isMatch(child)) found.push({ path: child, size: stat.size });
      }
    }
  };
  await walk("");
  return found.sort((a, b) => a.path.localeCompare(b.path));
}
