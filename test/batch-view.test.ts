/**
 * The batch's progress view on a fake stream and a fake clock: JSON lines for scripts, plain lines for logs, a live
 * block redrawn in place on a terminal, and the counts, rate, spend and ETA worked out by hand.
 */
import { expect } from "chai";
import type { BatchEvent } from "../driver/batch-events";
import { BatchTally, formatEta, formatRate } from "../driver/batch-tally";
import { batchViewMode, createBatchView } from "../driver/batch-view";

const MIN = 60_000;

class FakeStream {
  text = "";
  constructor(public columns?: number) {}
  write(s: string) {
    this.text += s;
    return true;
  }
}

/** A clock the test moves. */
function fakeClock() {
  const clock = { t: 1_000_000, now: () => clock.t };
  return clock;
}

/** What a terminal shows after `text`: enough of ANSI for the view (cursor up, carriage return, clear line/to end). */
function screen(text: string): string[] {
  const rows: string[] = [""];
  let row = 0;
  for (const token of text.match(/\x1b\[\d*[AJK]|\x1b\[2K|\r|\n|[^\x1b\r\n]+/g) ?? []) {
    if (token === "\n") rows[++row] ??= "";
    else if (token === "\r") continue;
    else if (/^\x1b\[\d+A$/.test(token)) row -= Number(token.slice(2, -1));
    else if (token === "\x1b[J") {
      rows.splice(row + 1);
      rows[row] = "";
    }
    else if (token === "\x1b[2K" || token === "\x1b[K") rows[row] = "";
    else rows[row] += token;
  }
  return rows.filter((r, i) => r !== "" || i < rows.length - 1);
}

const at = "2026-11-29T12:00:00.000Z";
const start = (over: Partial<Extract<BatchEvent, { event: "batch-start" }>> = {}): BatchEvent => ({
  event: "batch-start",
  at,
  batchId: "b-1",
  total: 10,
  toRun: 8,
  skipped: 2,
  held: 0,
  adopted: 0,
  concurrency: 4,
  engineConcurrency: 2,
  pricePerHour: 0.5,
  logDir: "/tmp/logs",
  ...over,
});
const launching = (subject: string): BatchEvent => ({ event: "job-launching", at, subject, jobId: `job-${subject}`, attempt: 1 });
const running = (subject: string): BatchEvent => ({ event: "job-running", at, subject, jobId: `job-${subject}`, instanceId: `i-${subject}`, adopted: false });
const done = (subject: string, outcome: string, costUsd?: number, reason?: string): BatchEvent => ({
  event: "job-done",
  at,
  subject,
  jobId: `job-${subject}`,
  outcome,
  costUsd,
  reason,
  seconds: 492,
});

/**
 * 10 subjects, 2 skipped, $0.5/h. S1–S4 run from 0; at 1 min S1 succeeds ($0.01), S2 fails ($0.01), S5 and S6 start
 * running; at 2 min S3 and S4 succeed ($0.02 each) and S7 is launching.
 */
function scriptedBatch(send: (e: BatchEvent) => void, clock: { t: number }) {
  scriptedBatchStart(send);
  scriptedBatchRest(send, clock);
}

function scriptedBatchStart(send: (e: BatchEvent) => void) {
  send(start());
  send(done("S9", "skipped"));
  send(done("S10", "skipped"));
  for (const s of ["S1", "S2", "S3", "S4"]) send(launching(s)), send(running(s));
}

function scriptedBatchRest(send: (e: BatchEvent) => void, clock: { t: number }) {
  clock.t += MIN;
  send(done("S1", "succeeded", 0.01));
  send(done("S2", "failed", 0.01, "exit code 1"));
  for (const s of ["S5", "S6"]) send(launching(s)), send(running(s));
  clock.t += MIN;
  send(done("S3", "succeeded", 0.02));
  send(done("S4", "succeeded", 0.02));
  send(launching("S7"));
}

/** At 2 min: 4 finished → 2 jobs/min; S7 queued-out, S8 queued; 4 left (S5–S7 in flight, S8) → 2 min; spend
 *  $0.06 done + S5, S6 one minute each at $0.5/h ($0.0167) = $0.0767. */
const AT_TWO_MINUTES = "running 3 · done 3 · failed 1 · queued 1 · 2.0 jobs/min · spent $0.08 · ETA 2m";

describe("batch view: the arithmetic", () => {
  it("counts, jobs per minute, spend and ETA of a scripted batch", () => {
    const clock = fakeClock();
    const tally = new BatchTally(clock.now, 10);
    const send = (e: BatchEvent) => tally.add(e);
    scriptedBatchStart(send);
    clock.t += MIN / 2;
    // Four jobs half a minute each at $0.5/h: $0.0167; nothing finished, so no rate and no ETA.
    expect(tally.countsLine()).to.equal("running 4 · done 0 · failed 0 · queued 4 · — jobs/min · spent $0.02 · ETA —");
    clock.t -= MIN / 2;
    scriptedBatchRest(send, clock);
    expect(tally.jobsPerMinute()).to.equal(2);
    expect(tally.etaMinutes()).to.equal(2);
    expect(tally.spentUsd()).to.be.closeTo(0.06 + 2 * (0.5 / 60), 1e-9);
    expect(tally.countsLine()).to.equal(AT_TWO_MINUTES);
  });

  it("a retried job's first attempt stays in the spend; adopted jobs leave the queue as running", () => {
    const clock = fakeClock();
    const tally = new BatchTally(clock.now);
    tally.add(start({ total: 3, toRun: 3, skipped: 0, adopted: 1, pricePerHour: 6 }));
    tally.add({ event: "job-running", at, subject: "A", jobId: "job-A", instanceId: "i-A", adopted: true });
    tally.add(launching("B"));
    tally.add(running("B"));
    expect([tally.inFlight, tally.queued]).to.deep.equal([2, 1]);
    clock.t += 10 * MIN; // $1 each at $6/h
    tally.add({ event: "job-retry", at, subject: "B", jobId: "job-B", reason: "spot interruption", attempt: 2 });
    clock.t += 10 * MIN; // B relaunching: not running, so its spend holds at $1; A is at $2
    expect(tally.spentUsd()).to.be.closeTo(3, 1e-9);
    tally.add(running("B"));
    clock.t += 10 * MIN; // A $3, B $1 + $1
    expect(tally.spentUsd()).to.be.closeTo(5, 1e-9);
    tally.add(done("B", "succeeded")); // no reported cost: its estimate stays
    expect(tally.spentUsd()).to.be.closeTo(5, 1e-9);
    expect(tally.inFlightJobs()).to.deep.equal([{ subject: "A", doing: "running" }]);
  });

  it("a resumed batch: jobs that ended in the earlier run are counted but not in this run's rate; a held subject says who holds it", () => {
    const clock = fakeClock();
    const stream = new FakeStream();
    const view = createBatchView({ mode: "plain", stream, now: clock.now });
    view.event(start({ total: 4, toRun: 1, skipped: 0, adopted: 1, endedEarlier: 1, held: 1 }));
    view.event({ event: "job-done", at, subject: "E", jobId: "job-E", outcome: "succeeded", earlierRun: true });
    view.event({ event: "job-done", at, subject: "H", outcome: "held", reason: "held-by-another-driver", message: "subject H is being run by carol@ws9 (pid 7, job job-H) since T" });
    clock.t += MIN;
    view.event(done("A", "succeeded", 0.01));
    view.close();
    const lines = stream.text.trimEnd().split("\n");
    expect(lines[0]).to.include("1 adopted, 1 ended in the earlier run;");
    expect(lines).to.include("[batch] E: succeeded in the earlier run of this batch");
    expect(lines).to.include("[batch] H: held — subject H is being run by carol@ws9 (pid 7, job job-H) since T");
    // One job finished in this run's minute: 1 job/min, not 2.
    expect(lines.at(-1)).to.match(/ 1\.0 jobs\/min /);
  });

  it("formats rates and ETAs", () => {
    expect(formatRate(4.1234)).to.equal("4.1");
    expect(formatRate(1 / 30)).to.equal("0.033");
    expect(formatRate(12.6)).to.equal("13");
    expect(formatEta(232)).to.equal("3h52m");
    expect(formatEta(2)).to.equal("2m");
    expect(formatEta(0.3)).to.equal("<1m");
    expect(formatEta(0)).to.equal("0m");
  });
});

describe("batch view: modes", () => {
  it("json when asked; a terminal only when it is one and TERM is not dumb", () => {
    const tty = { isTTY: true } as NodeJS.WriteStream;
    const pipe = { isTTY: false } as NodeJS.WriteStream;
    expect(batchViewMode({ json: true, stream: tty, env: { TERM: "xterm" } })).to.equal("json");
    expect(batchViewMode({ json: false, stream: tty, env: { TERM: "xterm" } })).to.equal("tty");
    expect(batchViewMode({ json: false, stream: tty, env: { TERM: "dumb" } })).to.equal("plain");
    expect(batchViewMode({ json: false, stream: pipe, env: { TERM: "xterm" } })).to.equal("plain");
  });

  it("json: one compact JSON line per event, which parses back to it, and nothing else", () => {
    const clock = fakeClock();
    const stream = new FakeStream();
    const view = createBatchView({ mode: "json", stream, now: clock.now });
    const sent: BatchEvent[] = [];
    scriptedBatch((e) => (sent.push(e), view.event(e)), clock);
    view.close();
    const lines = stream.text.trimEnd().split("\n");
    expect(lines.map((l) => JSON.parse(l))).to.deep.equal(JSON.parse(JSON.stringify(sent)));
    expect(lines.every((l) => !l.includes("\n") && l === JSON.stringify(JSON.parse(l)))).to.equal(true);
  });

  it("plain: a line per job change, failures with their reason, progress every 30 s of the clock and not more often", () => {
    const clock = fakeClock();
    const stream = new FakeStream();
    const view = createBatchView({ mode: "plain", stream, now: clock.now });
    view.event(start());
    view.event(launching("NDAR01"));
    view.event(running("NDAR01"));
    // An event every 5 s for 100 s: progress at 30, 60 and 90 s only.
    for (let i = 1; i <= 20; i++) {
      clock.t += 5_000;
      view.event({ event: "note", at, subject: "NDAR01", message: `tick ${i}` });
    }
    view.event(done("NDAR01", "succeeded", 0.11));
    view.event(done("NDAR02", "failed", 0.05, "out of memory"));
    view.event(done("NDAR03", "skipped"));
    const lines = stream.text.trimEnd().split("\n");
    expect(lines.every((l) => l.startsWith("[batch] "))).to.equal(true);
    expect(lines).to.include("[batch] NDAR01: running on i-NDAR01 (job job-NDAR01)");
    expect(lines).to.include("[batch] NDAR01: succeeded in 8m12s, $0.11");
    expect(lines).to.include("[batch] NDAR02: failed in 8m12s, $0.05 — out of memory");
    expect(lines.filter((l) => l.includes("NDAR03")), "skipped subjects are counted, not listed").to.deep.equal([]);
    const progress = lines.filter((l) => l.startsWith("[batch] running "));
    expect(progress).to.have.length(3);
    expect(lines.indexOf(progress[0])).to.equal(lines.indexOf("[batch] NDAR01: tick 6") + 1);
    view.close();
    const closing = stream.text.trimEnd().split("\n").at(-1);
    // 2 finished in 100 s: 1.2 jobs/min; 6 of 8 left → 5 min; $0.16 done.
    expect(closing).to.equal("[batch] running 0 · done 1 · failed 1 · queued 6 · 1.2 jobs/min · spent $0.16 · ETA 5m");
  });

  it("plain: the scripted batch's end prints the counts and the summary line", () => {
    const clock = fakeClock();
    const stream = new FakeStream();
    const view = createBatchView({ mode: "plain", stream, now: clock.now });
    scriptedBatch((e) => view.event(e), clock);
    view.event({ event: "batch-end", at, batchId: "b-1", exitCode: 1, counts: { succeeded: 3, failed: 1, skipped: 2 }, costUsd: 0.06, summaryPath: "/tmp/s.json" });
    view.close();
    const lines = stream.text.trimEnd().split("\n");
    expect(lines[0]).to.equal(
      "[batch] b-1: 10 subjects, 8 to run, 2 skipped (succeeded before), 0 held by another driver, 0 adopted; concurrency 4 (engine 2), $0.50/h per job; logs in /tmp/logs",
    );
    expect(lines.slice(-2)).to.deep.equal([`[batch] ${AT_TWO_MINUTES}`, "[batch] b-1 ended (exit 1): 3 succeeded, 1 failed, 2 skipped; cost $0.06; summary in /tmp/s.json"]);
  });
});

describe("batch view: terminal", () => {
  const CUP = /\x1b\[\d+A/g;

  it("redraws the block in place at most every redrawMs and on every finished job; close leaves it as text", () => {
    const clock = fakeClock();
    const stream = new FakeStream(200);
    const view = createBatchView({ mode: "tty", stream, now: clock.now, redrawMs: 500 });
    view.event(start()); // scrolls the header, draws the block
    view.event(launching("S1")); // within 500 ms: waits
    view.event(running("S1")); // waits
    clock.t += 500;
    view.event({ event: "job-phase", at, subject: "S1", jobId: "job-S1", phase: "inputs" }); // redraw 1
    clock.t += 100;
    view.event({ event: "job-phase", at, subject: "S1", jobId: "job-S1", phase: "run" }); // waits
    view.event(done("S1", "succeeded", 0.11)); // redraw 2: a finished job always
    view.event(done("S2", "failed", 0.2, "exit 2")); // redraw 3
    expect(stream.text.match(CUP)).to.have.length(3);
    view.close(); // the block is unchanged: not rewritten, and left alone from now on
    expect(stream.text.match(CUP)).to.have.length(3);
    clock.t += 60_000;
    view.event(launching("S3"));
    expect(stream.text.match(CUP), "nothing drawn after close").to.have.length(3);
    const shown = screen(stream.text);
    // The header and the finished jobs scrolled once each; the block is there once, at the bottom.
    expect(shown.filter((l) => l.startsWith("running "))).to.have.length(1);
    // 2 finished in 600 ms of the clock: 200 jobs/min; 6 queued at that rate: under a minute.
    expect(shown.slice(1)).to.deep.equal([
      "S1: succeeded in 8m12s, $0.11",
      "S2: failed in 8m12s, $0.20 — exit 2",
      "running 0 · done 1 · failed 1 · queued 6 · 200 jobs/min · spent $0.31 · ETA <1m",
    ]);
  });

  it("shows the jobs in flight, cuts block lines to the terminal's width, and shows a hostile reason's control characters as ?", () => {
    const clock = fakeClock();
    const stream = new FakeStream(40);
    const view = createBatchView({ mode: "tty", stream, now: clock.now });
    view.event(start());
    for (const s of ["NDAR01", "NDAR02"]) view.event(launching(s)), view.event(running(s));
    view.event({ event: "job-phase", at, subject: "NDAR01", jobId: "job-NDAR01", phase: "run" });
    view.event(done("NDAR03", "failed", undefined, "\x1b]0;pwned\x07"));
    view.event({ event: "note", at, subject: "NDAR02", message: "disk \x1b[2Jfull" });
    view.close();
    expect(stream.text).to.not.match(/\x1b\]|\x07|\x1b\[2J/);
    const shown = screen(stream.text);
    expect(shown).to.include("NDAR03: failed in 8m12s — ?]0;pwned?");
    expect(shown).to.include("NDAR02: disk ?[2Jfull");
    const block = shown.slice(-2);
    expect(block[0]).to.equal("running 2 · done 0 · failed 1 · queued…");
    expect(block[1]).to.equal("  NDAR01 run · NDAR02 running");
    expect(block.every((l) => l.length < 40)).to.equal(true);
  });
});
