/**
 * What the container is given: each input read-only at /data/inputs/<name>/ — the whole input, or (with `select`) a
 * view holding only the selected files at their relative paths, so decoys and sidecars in an archive stay unseen
 * while `{input}` names the same path either way. The view is a tree of hard links (same file system, no copy):
 * plain files work with every runtime's bind mount (docker, podman, apptainer), whatever the number of files.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { CONTAINER_PATHS } from "../job/layout";
import { JobFailure } from "./errors";
import type { FetchedInput } from "./inputs";
import type { Mount } from "./runtime-commands";

/** Views live in the inputs directory under a name no input can have (input names start with a letter or digit). */
export const VIEWS_DIR = ".selected";

/** The read-only mounts of `fetched` (downloaded under `inputsDir/<name>/`), building the views they need. */
export async function inputMounts(fetched: FetchedInput[], inputsDir: string): Promise<Mount[]> {
  const mounts: Mount[] = [];
  for (const input of fetched) {
    const source = path.join(inputsDir, input.name);
    const host = input.mount === "selected" ? await buildView(input, source, path.join(inputsDir, VIEWS_DIR, input.name)) : source;
    mounts.push({ host, container: path.posix.join(CONTAINER_PATHS.inputs, input.name), readOnly: true });
  }
  return mounts;
}

async function buildView(input: FetchedInput, source: string, view: string): Promise<string> {
  await fsp.rm(view, { recursive: true, force: true });
  await fsp.mkdir(view, { recursive: true });
  for (const file of input.selected) {
    // Selected files are regular files the extraction wrote; a link is never given in their place.
    const stat = await fsp.lstat(path.join(source, file));
    if (!stat.isFile()) throw new JobFailure("internal-error", `input "${input.name}": selected "${file}" is not a regular file`, "run");
    await fsp.mkdir(path.dirname(path.join(view, file)), { recursive: true });
    await fsp.link(path.join(source, file), path.join(view, file));
  }
  return view;
}
