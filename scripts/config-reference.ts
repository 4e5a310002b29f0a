/**
 * `npm run docs:config`: rewrite the key table in docs/configuration.md from job/config-keys.ts (the test
 * test/config-keys.test.ts fails while the two differ).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { configReferenceTable } from "../job/config-keys";

export const CONFIG_DOC = path.resolve(__dirname, "..", "docs", "configuration.md");
const BEGIN = "<!-- generated from job/config-keys.ts: npm run docs:config -->\n";
const END = "<!-- end of generated table -->\n";

/** The document with its generated table replaced by the current one. */
export function withCurrentTable(document: string): string {
  const start = document.indexOf(BEGIN);
  const end = document.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${CONFIG_DOC}: the markers around the generated table are missing`);
  return document.slice(0, start + BEGIN.length) + configReferenceTable() + document.slice(end);
}

if (require.main === module) {
  fs.writeFileSync(CONFIG_DOC, withCurrentTable(fs.readFileSync(CONFIG_DOC, "utf8")));
  process.stdout.write(`${path.relative(process.cwd(), CONFIG_DOC)} rewritten\n`);
}
