/**
 * docs/RELIABILITY.md, written by the suites that attack the tool: each scenario reports what it expected and what
 * it observed (exit code, marker reason, resources left, files outside the sandbox, ...). The file is rewritten at the
 * end of every run that recorded something, so it always says what the last run measured; a run of a single file
 * writes only that file's rows.
 */
import * as fs from "node:fs";
import * as path from "node:path";

export type Category = "fault" | "bad input" | "secret";

interface Row {
  category: Category;
  suite: string;
  scenario: string;
  expected: string;
  observed: string;
  pass: boolean;
}

const rows: Row[] = [];
const OUT = path.resolve(__dirname, "..", "..", "docs", "RELIABILITY.md");

/** Record a scenario. `check` runs the assertions; its failure is recorded as observed, then rethrown. */
export async function scenario(category: Category, suite: string, name: string, expected: string, check: () => Promise<string>): Promise<void> {
  try {
    const observed = await check();
    rows.push({ category, suite, scenario: name, expected, observed, pass: true });
  } catch (err) {
    rows.push({ category, suite, scenario: name, expected, observed: `FAILED: ${(err as Error).message.split("\n")[0]}`, pass: false });
    throw err;
  }
}

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\s+/g, " ").trim();

function render(): string {
  const sections: Array<[Category, string]> = [
    ["fault", "Faults: signals, crashes, network faults, malicious and broken inputs"],
    ["bad input", "Bad input: refused with exit 2, naming the field, nothing created"],
    ["secret", "Secrets: where a presigned URL's signature or an env value must never appear"],
  ];
  const lines = [
    "# Reliability: what the attack suites measured",
    "",
    "Written by `npm test` (test/support/reliability.ts) from the suites that attack the tool with the real parts: the",
    "Pulumi engine, moto S3, podman + runc, real signals to real processes. Each row is one scenario; *observed* is what",
    "the run measured. Rerun with `npm test`; a single test file rewrites this page with its own rows only.",
    "",
  ];
  for (const [category, title] of sections) {
    const own = rows.filter((r) => r.category === category);
    if (own.length === 0) continue;
    lines.push(`## ${title} (${own.filter((r) => r.pass).length}/${own.length} pass)`, "", "| scenario | expected | observed | pass |", "| --- | --- | --- | --- |");
    for (const r of own) lines.push(`| ${cell(`${r.suite}: ${r.scenario}`)} | ${cell(r.expected)} | ${cell(r.observed)} | ${r.pass ? "yes" : "**no**"} |`);
    lines.push("");
  }
  lines.push(`Total: ${rows.filter((r) => r.pass).length} of ${rows.length} scenarios pass.`, "");
  return lines.join("\n");
}

// A root-level hook: mocha loads this module while collecting tests.
if (typeof after === "function") {
  after(() => {
    if (rows.length > 0) fs.writeFileSync(OUT, render());
  });
}
