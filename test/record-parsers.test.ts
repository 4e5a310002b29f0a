/**
 * The zod-free readers of the agent's status and marker (job/record-parsers.ts) against the zod schemas of
 * job/records.ts: for every record and every malformed variant below they accept the same values and return the same
 * result, key order included. The variants replace, drop or add each field (nested ones too) and mix several at once.
 */
import { expect } from "chai";
import type { ZodType } from "zod";
import { AgentStatus, CompletionMarker, PhaseProgress } from "../job/records";
import { parseAgentStatus, parseCompletionMarker } from "../job/record-parsers";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const FULL_STATUS = {
  jobId: "job-1",
  launchId: "launch-1",
  instanceId: "i-0123",
  phase: "outputs",
  updatedAt: "2026-11-29T10:00:00Z",
  startedAt: "2026-11-29T09:00:00Z",
  phases: { inputs: { bytesDone: 10, bytesTotal: 20, startedAt: "a", endedAt: "b" }, run: { bytesDone: 0 } },
  message: "uploading",
  booting: false,
};
const FULL_MARKER = {
  apiVersion: "cloudcompute/v1",
  jobId: "job-1",
  launchId: "launch-1",
  instanceId: "i-0123",
  subject: "sub-01",
  outcome: "failed",
  phase: "run",
  reason: "container-failed",
  message: "failed: exit 2",
  exitCode: 2,
  startedAt: "2026-11-29T09:00:00Z",
  finishedAt: "2026-11-29T10:00:00Z",
  outputs: { prefix: "s3://b/out/sub-01/", count: 3, bytes: 1024, partial: true },
  timings: { inputs: 1.5, run: 300 },
};
const minimal = (record: Record<string, Json>, schema: { shape: Record<string, ZodType> }) =>
  Object.fromEntries(Object.entries(record).filter(([key]) => !schema.shape[key].safeParse(undefined).success));

const ODD_VALUES: Json[] = [null, true, false, 0, -0.5, -1, 1.5, 2 ** 53, -(2 ** 53), 1e308, "", "x", "run", "bootstrap", "done", "cloudcompute/v1", "cloudcompute/v2", "succeeded", "spot-interrupted", "bogus-reason", [], [1], {}, { bytesDone: 1 }, { run: 1 }];

/** Every path to a value inside `value` (objects only; arrays are leaves). */
function paths(value: Json, at: string[] = []): string[][] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [at];
  return [at, ...Object.entries(value).flatMap(([key, inner]) => paths(inner, [...at, key]))];
}

const isRecord = (value: unknown): value is Record<string, Json> => typeof value === "object" && value !== null && !Array.isArray(value);

/** A copy of `value` with `change` applied at `at` (unchanged when `at` no longer leads to an object). */
function edit(value: Json, at: string[], change: (parent: Record<string, Json>, key: string) => void): Json {
  const copy = JSON.parse(JSON.stringify(value)) as Json;
  let parent: unknown = copy;
  for (const key of at.slice(0, -1)) parent = isRecord(parent) ? parent[key] : undefined;
  if (at.length > 0 && isRecord(parent)) change(parent, at[at.length - 1]);
  return copy;
}

/** Each field replaced by each odd value, dropped, and given an unknown sibling; the whole record replaced too. */
function variants(record: Json): Json[] {
  const out: Json[] = [record, ...ODD_VALUES];
  for (const at of paths(record)) {
    for (const odd of ODD_VALUES) out.push(edit(record, at, (parent, key) => (parent[key] = odd)));
    if (at.length > 0) out.push(edit(record, at, (parent, key) => delete parent[key]));
    out.push(edit(record, [...at, "unknownKey"], (parent, key) => (parent[key] = 1)));
    for (const phase of ["pull", "finishing", "bogus"]) out.push(edit(record, [...at, phase], (parent, key) => (parent[key] = { bytesDone: 5 })));
  }
  return out;
}

/** A seeded generator: the same mixed variants on every run. */
function* mixed(record: Json, count: number): Generator<Json> {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const all = paths(record).filter((at) => at.length > 0);
  for (let i = 0; i < count; i++) {
    let value = record;
    for (let n = 1 + Math.floor(random() * 3); n > 0; n--) {
      const at = all[Math.floor(random() * all.length)];
      const odd = ODD_VALUES[Math.floor(random() * ODD_VALUES.length)];
      value = random() < 0.2 ? edit(value, at, (parent, key) => delete parent[key]) : edit(value, at, (parent, key) => (parent[key] = odd));
    }
    yield value;
  }
}

function expectAgreement(parse: (value: unknown) => unknown, schema: ZodType, inputs: Iterable<Json>): { accepted: number; refused: number } {
  const counts = { accepted: 0, refused: 0 };
  for (const input of inputs) {
    const expected = schema.safeParse(input);
    const got = parse(input);
    const shown = JSON.stringify(input);
    if (expected.success) {
      expect(got, `accepts ${shown}`).to.not.equal(undefined);
      expect(JSON.stringify(got), shown).to.equal(JSON.stringify(expected.data));
      counts.accepted++;
    } else {
      expect(got, `refuses ${shown}`).to.equal(undefined);
      counts.refused++;
    }
  }
  return counts;
}

describe("record parsers without zod: the same answers as the schemas", () => {
  it("the sample records use every field of the schemas (a new field needs a sample, and a check)", () => {
    expect(Object.keys(FULL_STATUS)).to.have.members(Object.keys(AgentStatus.shape));
    expect(Object.keys(FULL_STATUS.phases.inputs)).to.have.members(Object.keys(PhaseProgress.shape));
    expect(Object.keys(FULL_MARKER)).to.have.members(Object.keys(CompletionMarker.shape));
    expect(Object.keys(FULL_MARKER.outputs)).to.have.members(Object.keys(CompletionMarker.shape.outputs.shape));
  });

  it("agent status: every variant accepted or refused alike, with the same result", () => {
    const records = [FULL_STATUS, minimal(FULL_STATUS, AgentStatus), { ...FULL_STATUS, booting: true, phases: {} }];
    const counts = expectAgreement(parseAgentStatus, AgentStatus, [...records.flatMap(variants), ...mixed(FULL_STATUS, 2000)]);
    expect(counts.accepted).to.be.greaterThan(100);
    expect(counts.refused).to.be.greaterThan(1000);
  });

  it("completion marker: every variant accepted or refused alike, with the same result", () => {
    const records = [FULL_MARKER, minimal(FULL_MARKER, CompletionMarker), { ...FULL_MARKER, outcome: "succeeded", phase: "bootstrap", exitCode: -1, timings: {} }];
    const counts = expectAgreement(parseCompletionMarker, CompletionMarker, [...records.flatMap(variants), ...mixed(FULL_MARKER, 2000)]);
    expect(counts.accepted).to.be.greaterThan(100);
    expect(counts.refused).to.be.greaterThan(1000);
  });

  it("a __proto__ key from JSON is dropped from phases and timings as zod drops it, and cannot change a prototype", () => {
    const status = JSON.parse(`{"jobId":"j","phase":"run","updatedAt":"u","startedAt":"s","phases":{"__proto__":{"bytesDone":1}},"__proto__":{"jobId":"x"}}`);
    expect(JSON.stringify(parseAgentStatus(status))).to.equal(JSON.stringify(AgentStatus.parse(status)));
    expect(Object.getPrototypeOf(parseAgentStatus(status)!.phases)).to.equal(Object.prototype);
    const marker = JSON.parse(JSON.stringify(FULL_MARKER).replace('"timings":{', '"timings":{"__proto__":1,'));
    expect(JSON.stringify(parseCompletionMarker(marker))).to.equal(JSON.stringify(CompletionMarker.parse(marker)));
  });
});
