/**
 * How a batch shows its progress (driver/batch-events.ts): on a terminal, finished jobs and notes scroll above a live
 * block of counts redrawn in place; otherwise plain `[batch] ` lines, one per job state change, with a progress line
 * at most every 30 s; with `--json`, each event as one JSON line for scripts. Synchronous: the only I/O is
 * stream.write, so thousands of events cost little.
 */
import type { BatchEvent, BatchEventSink } from "./batch-events";
import { BatchTally } from "./batch-tally";
import { formatDuration } from "./progress";
import { formatCost, formatNetSaving, printable } from "./summary";

export type BatchViewMode = "tty" | "plain" | "json";

export interface BatchViewStream {
  write(s: string): unknown;
  columns?: number;
}

export interface BatchViewOptions {
  mode: BatchViewMode;
  stream: BatchViewStream;
  /** Subjects in the batch, for the counts before batch-start arrives. */
  total?: number;
  now?: () => number;
  /** Least time between two redraws of the live block (tty). */
  redrawMs?: number;
}

/** A plain line at most this often (by `now()`), so logs stay short. */
const PLAIN_PROGRESS_MS = 30_000;
/** Jobs named in the live block's in-flight line before "+N more". */
const IN_FLIGHT_NAMED = 8;

export function batchViewMode(options: { json: boolean; stream: NodeJS.WriteStream; env?: NodeJS.ProcessEnv }): BatchViewMode {
  if (options.json) return "json";
  const env = options.env ?? process.env;
  return options.stream.isTTY && env.TERM !== "dumb" ? "tty" : "plain";
}

export function createBatchView(options: BatchViewOptions): BatchEventSink {
  if (options.mode === "json") return jsonView(options.stream);
  const now = options.now ?? Date.now;
  const tally = new BatchTally(now, options.total);
  return options.mode === "tty" ? ttyView(options.stream, tally, now, options.redrawMs ?? 500) : plainView(options.stream, tally, now);
}

function jsonView(stream: BatchViewStream): BatchEventSink {
  let closed = false;
  return {
    event(e) {
      if (!closed) stream.write(JSON.stringify(e) + "\n");
    },
    close() {
      closed = true;
    },
  };
}

/** Text from jobs and files on one line, safe for a terminal. */
const oneLine = (text: string) => printable(text).replace(/[\n\t]/g, " ");

/**
 * What a person reads about one event, or undefined for none: `NDAR01: succeeded in 8m12s, $0.11`. `everyChange`
 * (plain logs) includes launches, phases and finishing, which the live block shows on a terminal.
 */
function eventLines(e: BatchEvent, tally: BatchTally, everyChange: boolean): string[] {
  const who = (subject: string) => oneLine(subject);
  switch (e.event) {
    case "batch-start":
      return [
        `${oneLine(e.batchId)}: ${e.total} subjects, ${e.toRun} to run, ${e.skipped} skipped (succeeded before), ${e.held} held by another driver, ` +
          `${e.adopted} adopted${e.endedEarlier ? `, ${e.endedEarlier} ended in the earlier run` : ""}; concurrency ${e.concurrency} (engine ${e.engineConcurrency})` +
          `${e.pricePerHour === undefined ? "" : `, ${formatCost(e.pricePerHour)}/h per job`}; logs in ${oneLine(e.logDir)}`,
      ];
    case "job-launching":
      return everyChange ? [`${who(e.subject)}: launching (job ${oneLine(e.jobId)}, attempt ${e.attempt})`] : [];
    case "job-running":
      return everyChange ? [`${who(e.subject)}: running on ${oneLine(e.instanceId)} (job ${oneLine(e.jobId)}${e.adopted ? ", adopted" : ""})`] : [];
    case "job-phase":
      return everyChange ? [`${who(e.subject)}: ${oneLine(e.phase)}`] : [];
    case "job-finishing":
      return everyChange ? [`${who(e.subject)}: finishing${e.reason ? ` (${oneLine(e.reason)})` : ""}`] : [];
    case "job-retry":
      return [`${who(e.subject)}: retrying (attempt ${e.attempt}): ${oneLine(e.reason)}`];
    case "job-done": {
      // Skipped subjects are counted in the batch-start line, not listed one by one (there may be thousands).
      if (e.outcome === "skipped") return [];
      if (e.earlierRun) return [`${who(e.subject)}: ${oneLine(e.outcome)} in the earlier run of this batch${e.reason ? ` — ${oneLine(e.reason)}` : ""}`];
      // Who holds it and until when: what the user needs to wait for, or to find the other driver.
      if (e.outcome === "held" && e.message) return [`${who(e.subject)}: held — ${oneLine(e.message)}`];
      const took = e.seconds === undefined ? "" : ` in ${formatDuration(e.seconds)}`;
      const cost = e.costUsd === undefined ? "" : `, ${formatCost(e.costUsd)}`;
      return [`${who(e.subject)}: ${oneLine(e.outcome)}${took}${cost}${e.reason ? ` — ${oneLine(e.reason)}` : ""}`];
    }
    case "note":
      return printable(e.message)
        .split("\n")
        .map((line) => (e.subject ? `${who(e.subject)}: ${line}` : line));
    case "batch-end": {
      const counts = Object.entries(e.counts)
        .filter(([, n]) => n > 0)
        .map(([outcome, n]) => `${n} ${oneLine(outcome)}`);
      return [
        `${oneLine(tally.batchId ?? e.batchId)} ended (exit ${e.exitCode}): ${counts.join(", ") || "no jobs"}; cost ${e.unknownCostSubjects ? `at least ${formatCost(e.costUsd)} (${e.unknownCostSubjects} subject(s)' cost unknown)` : formatCost(e.costUsd)}${spotPart(e)}; summary in ${oneLine(e.summaryPath)}`,
      ];
    }
  }
}

/** The batch's spot savings, lost attempts' cost and the net, when it had any. */
function spotPart(e: { spotSavedUsd?: number; interruptionCostUsd?: number; spotNetSavedUsd?: number }): string {
  const parts = [
    e.spotSavedUsd !== undefined ? `spot saved ${formatCost(e.spotSavedUsd)}` : "",
    e.interruptionCostUsd ? `lost attempts cost ${formatCost(e.interruptionCostUsd)} of it` : "",
    e.spotNetSavedUsd !== undefined ? `net ${formatNetSaving(e.spotNetSavedUsd)} against on demand` : "",
  ].filter(Boolean);
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

function plainView(stream: BatchViewStream, tally: BatchTally, now: () => number): BatchEventSink {
  let lastProgress = now();
  let closed = false;
  const write = (lines: string[]) => {
    for (const line of lines) stream.write(`[batch] ${line}\n`);
  };
  const progress = () => {
    write([tally.countsLine()]);
    lastProgress = now();
  };
  // A line while nothing happens for a while (jobs run for hours), at the same "at most every 30 s".
  const timer = setInterval(() => {
    if (!closed && now() - lastProgress >= PLAIN_PROGRESS_MS) progress();
  }, PLAIN_PROGRESS_MS);
  timer.unref();
  return {
    event(e) {
      if (closed) return;
      tally.add(e);
      if (e.event === "batch-start") lastProgress = now();
      if (e.event === "batch-end") progress();
      write(eventLines(e, tally, true));
      if (e.event !== "batch-end" && now() - lastProgress >= PLAIN_PROGRESS_MS) progress();
    },
    close() {
      if (closed) return;
      clearInterval(timer);
      if (!tally.ended) progress();
      closed = true;
    },
  };
}

/** `line` no wider than the terminal (one column spare: writing the last one wraps on some terminals). */
function fit(line: string, columns: number | undefined): string {
  if (!columns || columns < 2 || line.length < columns) return line;
  return line.slice(0, columns - 2) + "…";
}

/** The live block: the counts, and which jobs are in flight doing what. */
function liveBlock(tally: BatchTally): string[] {
  const lines = [tally.countsLine()];
  const jobs = tally.inFlightJobs();
  if (jobs.length > 0) {
    const named = jobs.slice(0, IN_FLIGHT_NAMED).map((j) => `${oneLine(j.subject)} ${oneLine(j.doing)}`);
    if (jobs.length > IN_FLIGHT_NAMED) named.push(`+${jobs.length - IN_FLIGHT_NAMED} more`);
    lines.push(`  ${named.join(" · ")}`);
  }
  return lines;
}

function ttyView(stream: BatchViewStream, tally: BatchTally, now: () => number, redrawMs: number): BatchEventSink {
  let drawnLines = 0;
  let lastDraw = -Infinity;
  let drawnBlock = "";
  let closed = false;
  /** Cursor back to the block's first line, its lines cleared (ANSI: up N, clear to the screen's end). */
  const erase = () => (drawnLines > 0 ? `\x1b[${drawnLines}A\r\x1b[J` : "");
  const draw = (above: string[] = []) => {
    const lines = liveBlock(tally).map((line) => `\x1b[2K${fit(line, stream.columns)}\n`);
    const block = lines.join("");
    lastDraw = now();
    if (above.length === 0 && block === drawnBlock) return;
    // One write per redraw, so the terminal never shows a half-drawn block.
    stream.write(erase() + above.map((line) => `${line}\n`).join("") + block);
    drawnLines = lines.length;
    drawnBlock = block;
  };
  // Draws changes that waited for their slot, and the clock's effect on spend and ETA (an unchanged block is not rewritten).
  const timer = setInterval(() => {
    if (!closed) draw();
  }, redrawMs);
  timer.unref();
  return {
    event(e) {
      if (closed) return;
      tally.add(e);
      const above = eventLines(e, tally, false);
      // Lines that scroll and finished jobs draw at once; other changes wait for the next redraw slot.
      if (above.length > 0 || e.event === "job-done" || now() - lastDraw >= redrawMs) draw(above);
    },
    close() {
      if (closed) return;
      clearInterval(timer);
      draw();
      // The final block stays as ordinary text: nothing moves the cursor back over it any more.
      drawnLines = 0;
      closed = true;
    },
  };
}
