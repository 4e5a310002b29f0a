/**
 * Is dist/cli.js (scripts/build-cli.js) built from the sources as they are now? Its stamp lists every source file
 * esbuild put in it with size, mtime and SHA-256. Checked at every start, so it must stay cheap: a stat per file
 * (~1 ms for the whole driver), hashing only a file whose mtime moved (a checkout that did not change it is fresh).
 * Plain JavaScript, no dependencies: it runs before anything is loaded.
 */
"use strict";
const { createHash } = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const STAMP_VERSION = 1;

/** The stamp written beside a bundle: `dist/cli.js` → `dist/cli.stamp.json`. */
function stampPath(bundle) {
  return bundle.replace(/\.js$/, "") + ".stamp.json";
}

function sha256(file) {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/** The stamp entry of one source file, its path relative to `root`. */
function stampEntry(root, rel) {
  const file = path.join(root, rel);
  const stat = fs.statSync(file);
  return { path: rel, size: stat.size, mtimeMs: stat.mtimeMs, sha256: sha256(file) };
}

/**
 * `{ fresh: true }`, or `{ fresh: false, why }` naming the first source that differs (or the missing bundle/stamp).
 * `root` is where the stamp's relative paths start (the package root).
 */
function bundleState(bundle, root) {
  let stamp;
  try {
    stamp = JSON.parse(fs.readFileSync(stampPath(bundle), "utf8"));
  } catch {
    return { fresh: false, why: fs.existsSync(bundle) ? `${path.basename(stampPath(bundle))} is missing or unreadable` : `${path.relative(root, bundle)} is not built` };
  }
  if (stamp.version !== STAMP_VERSION || !Array.isArray(stamp.sources) || stamp.node !== process.versions.node.split(".")[0]) {
    return { fresh: false, why: "its stamp is from another build script or Node version" };
  }
  if (!fs.existsSync(bundle)) return { fresh: false, why: `${path.relative(root, bundle)} is missing` };
  for (const source of stamp.sources) {
    const file = path.join(root, source.path);
    let stat;
    try {
      stat = fs.statSync(file);
    } catch {
      return { fresh: false, why: `${source.path} is gone` };
    }
    if (stat.size !== source.size) return { fresh: false, why: `${source.path} changed` };
    if (stat.mtimeMs !== source.mtimeMs && sha256(file) !== source.sha256) return { fresh: false, why: `${source.path} changed` };
  }
  return { fresh: true };
}

module.exports = { bundleState, stampEntry, stampPath, STAMP_VERSION };
