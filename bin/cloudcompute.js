#!/usr/bin/env node
// The `cloudcompute` command: runs the TypeScript driver through tsx's require hook (no build step).
"use strict";
require("tsx/cjs");
const { main, exitProcess } = require("../driver/cli.ts");
main().then(exitProcess);
