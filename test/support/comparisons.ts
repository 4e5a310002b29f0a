/** Comparisons written as `run --compare` saves them (job/comparison.ts's shape), for the readers' tests. */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { BadInputError } from "../../driver/errors";
import type { Comparison } from "../../job/comparison";

/** Saved at <home>/comparisons/<id>/comparison.json; `value` may be raw text (a corrupt or crafted file). */
export function saveComparison(home: string, value: Comparison | string, id = typeof value === "string" ? "raw" : value.comparisonId): string {
  const dir = path.join(home, "comparisons", id);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "comparison.json"), typeof value === "string" ? value : JSON.stringify(value));
  return dir;
}

/** The message of the BadInputError `fn` throws (the test fails if it throws none, or another kind). */
export function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(BadInputError);
    return (err as Error).message;
  }
  throw new Error("not refused");
}
