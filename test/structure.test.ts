/**
 * The layers stay layered: each folder imports only from the folders below it, so a folder's name tells what it may
 * depend on (job → common → agent, infra → driver → sandbox, bench → test). And no source file grows past ~400 lines
 * without saying why in a `size:` note at its top.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..");

/** What each folder may import from (besides itself and packages). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  job: [],
  common: ["job"],
  agent: ["job", "common"],
  infra: ["job", "common"],
  "index.ts": ["job", "common", "infra"],
  driver: ["job", "common", "infra"],
  sandbox: ["job", "common", "infra", "driver"],
  bench: ["job", "common", "infra", "driver", "agent", "sandbox", "scripts", "bin"],
  test: ["job", "common", "infra", "driver", "agent", "sandbox", "bench", "index.ts", "scripts", "bin"],
};

const MAX_LINES = 400;

function sourceFiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...sourceFiles(rel));
    else if (entry.name.endsWith(".ts")) found.push(rel);
  }
  return found;
}

/** Relative module paths a file imports, statically or through require()/import(). */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), "utf8");
  return [...text.matchAll(/(?:\bfrom\s+|\brequire\(\s*|\bimport\(\s*)"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]);
}

/** The top-level part a repository path belongs to: its first folder, or the file itself at the top. */
const partOf = (rel: string) => rel.split(path.sep)[0];

describe("structure: layers and file sizes", () => {
  const files = Object.keys(MAY_IMPORT).flatMap((part) => (part.endsWith(".ts") ? [part] : sourceFiles(part)));

  it("every import points down the layers (no driver in agent/infra/job, no test/ outside the tests)", () => {
    const wrong: string[] = [];
    for (const file of files) {
      const from = partOf(file);
      for (const spec of relativeImports(file)) {
        let target = path.relative(ROOT, path.resolve(ROOT, path.dirname(file), spec));
        if (fs.existsSync(path.join(ROOT, target + ".ts"))) target += ".ts";
        const to = partOf(target);
        if (to !== from && !MAY_IMPORT[from].includes(to)) wrong.push(`${file} imports ${target}`);
      }
    }
    expect(wrong, wrong.join("\n")).to.deep.equal([]);
  });

  it(`no source file over ${MAX_LINES} lines unless a 'size:' note at its top says why`, () => {
    const long: string[] = [];
    for (const file of files.filter((f) => !f.startsWith("test" + path.sep))) {
      const text = fs.readFileSync(path.join(ROOT, file), "utf8");
      const lines = text.split("\n").length;
      if (lines > MAX_LINES && !/^\s*\*?\s*size:/m.test(text.split("\n").slice(0, 15).join("\n"))) long.push(`${file}: ${lines} lines`);
    }
    expect(long, long.join("\n")).to.deep.equal([]);
  });

  it("the layer check sees a wrong import (it is not vacuous)", () => {
    expect(relativeImports("infra/local.ts")).to.include("../common/paths");
    expect(MAY_IMPORT.infra).to.not.include("driver");
  });
});
