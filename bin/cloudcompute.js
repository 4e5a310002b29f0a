#!/usr/bin/env node
// The `cloudcompute` command. Runs the prebuilt driver (dist/cli.js, `npm run build`) when it is built from the
// sources as they are; otherwise the TypeScript sources through tsx (slower start) and says why, so an edited source
// never runs as its stale build. CLOUDCOMPUTE_CLI_BUNDLE names another bundle (tests); =off always runs the sources.
"use strict";
const path = require("node:path");
const root = path.resolve(__dirname, "..");
const wanted = process.env.CLOUDCOMPUTE_CLI_BUNDLE;
let driver;
if (wanted !== "off") {
  const bundle = wanted ? path.resolve(wanted) : path.join(root, "dist", "cli.js");
  const state = require("./cli-bundle.js").bundleState(bundle, root);
  if (state.fresh) driver = require(bundle);
  // A batch's workers start from the same tree as their parent, which has said it already.
  else if (process.env.CLOUDCOMPUTE_WORKER !== "1") {
    process.stderr.write(`cloudcompute: running the TypeScript sources (slower start): ${state.why}; \`npm run build\` prebuilds the CLI\n`);
  }
}
if (!driver) {
  require("tsx/cjs");
  driver = require("../driver/cli.ts");
}
driver.main().then(driver.exitProcess);
