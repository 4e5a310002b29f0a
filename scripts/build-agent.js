#!/usr/bin/env node
/**
 * Bundle the on-instance agent into one file: `node scripts/build-agent.js [--outfile dist/agent.js]`.
 * The output is deterministic for a given source tree (no timestamps), so its SHA-256 can address it in S3.
 * Prints the path and the SHA-256; `require`d, it exports buildAgent().
 */
"use strict";
const { createHash } = require("node:crypto");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const root = path.resolve(__dirname, "..");

function agentVersion() {
  const { version } = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
  try {
    const commit = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: root, stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
    return `${version}+${commit}`;
  } catch {
    return version;
  }
}

/** Build the bundle; resolves to { outfile, sha256, version, bytes }. */
async function buildAgent({ outfile = path.join(root, "dist", "agent.js"), version = agentVersion() } = {}) {
  await esbuild.build({
    entryPoints: [path.join(root, "agent", "main.ts")],
    outfile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    minify: true,
    keepNames: true,
    legalComments: "none",
    logLevel: "warning",
    banner: { js: `#!/usr/bin/env node\n// cloudcompute agent ${version}` },
    define: { __CLOUDCOMPUTE_AGENT_VERSION__: JSON.stringify(version) },
  });
  const content = fs.readFileSync(outfile);
  const sha256 = createHash("sha256").update(content).digest("hex");
  fs.chmodSync(outfile, 0o755);
  return { outfile, sha256, version, bytes: content.length };
}

if (require.main === module) {
  const at = process.argv.indexOf("--outfile");
  const outfile = at > 0 ? path.resolve(process.argv[at + 1]) : undefined;
  buildAgent({ outfile }).then(
    (result) => {
      process.stdout.write(`${path.relative(process.cwd(), result.outfile) || result.outfile} ${result.bytes} bytes, agent ${result.version}\n`);
      process.stdout.write(`sha256 ${result.sha256}\n`);
    },
    (err) => {
      process.stderr.write(`build-agent: ${err.message}\n`);
      process.exit(1);
    },
  );
}

module.exports = { buildAgent, agentVersion };
