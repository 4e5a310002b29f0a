#!/usr/bin/env node
/**
 * Prebuild the driver CLI: `node scripts/build-cli.js [--outfile dist/cli.js]` (npm run build). esbuild bundles our
 * own TypeScript into one CommonJS file; packages stay external (require()d from node_modules): the Pulumi SDK must
 * be the one copy the dynamic-provider plugin also loads, and provider closures require the AWS SDK by name.
 * Beside it a stamp (bin/cli-bundle.js) lists the sources it was built from, so bin/cloudcompute.js can tell a stale
 * bundle. `require`d, it exports buildCli().
 */
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");
const { stampEntry, stampPath, STAMP_VERSION } = require("../bin/cli-bundle.js");

const root = path.resolve(__dirname, "..");

/** Build `entry` (default driver/cli.ts) into `outfile`; resolves to { outfile, bytes, sources }. */
async function buildCli({ outfile = path.join(root, "dist", "cli.js"), entry = path.join(root, "driver", "cli.ts"), base = root } = {}) {
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    packages: "external",
    platform: "node",
    target: "node20",
    format: "cjs",
    // Not minified: Pulumi serialises the dynamic providers' functions from their source text.
    sourcemap: "external",
    legalComments: "none",
    logLevel: "warning",
    metafile: true,
    absWorkingDir: base,
    banner: { js: "// cloudcompute CLI, built by scripts/build-cli.js from the sources its stamp lists" },
  });
  // The stamp names every file esbuild read (paths relative to `base`) plus package.json (external versions).
  const inputs = Object.keys(result.metafile.inputs).filter((input) => !input.includes("node_modules/"));
  const extra = ["package.json"].filter((rel) => fs.existsSync(path.join(base, rel)));
  const sources = [...new Set([...inputs, ...extra])].sort().map((rel) => stampEntry(base, rel));
  const stamp = { version: STAMP_VERSION, node: process.versions.node.split(".")[0], sources };
  fs.writeFileSync(stampPath(outfile), JSON.stringify(stamp, null, 1) + "\n");
  return { outfile, bytes: fs.statSync(outfile).size, sources: sources.length };
}

if (require.main === module) {
  const at = process.argv.indexOf("--outfile");
  const outfile = at > 0 ? path.resolve(process.argv[at + 1]) : undefined;
  buildCli({ outfile }).then(
    (r) => process.stdout.write(`${path.relative(process.cwd(), r.outfile) || r.outfile} ${r.bytes} bytes from ${r.sources} sources\n`),
    (err) => {
      process.stderr.write(`build-cli: ${err.message}\n`);
      process.exit(1);
    },
  );
}

module.exports = { buildCli };
