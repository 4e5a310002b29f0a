/**
 * Live progress from the agent's status object, on stderr: one redrawn line with a bar on a TTY, plain lines
 * (on phase changes and every half minute) otherwise, so logs of batch workers and CI stay readable.
 */
import type { AgentStatus, Phase } from "../job/records";

export interface Progress {
  /** A new status object from the agent. */
  status(status: AgentStatus): void;
  /** A driver event ("creating stack", "destroying"). */
  note(message: string): void;
  /** Leave the progress line; later output starts on a fresh line. */
  end(): void;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m${String(rest).padStart(2, "0")}s` : m > 0 ? `${m}m${String(rest).padStart(2, "0")}s` : `${rest}s`;
}

/** "inputs 12.0 MiB/40.0 MiB" style detail for the current phase, with its fraction when the total is known. */
function phaseDetail(status: AgentStatus): { text: string; fraction?: number } {
  const progress = status.phases[status.phase];
  if (!progress || (!progress.bytesDone && !progress.bytesTotal)) return { text: status.message ?? "" };
  if (progress.bytesTotal) {
    return {
      text: `${formatBytes(progress.bytesDone)}/${formatBytes(progress.bytesTotal)}`,
      fraction: Math.min(1, progress.bytesDone / progress.bytesTotal),
    };
  }
  return { text: formatBytes(progress.bytesDone) };
}

function bar(fraction: number, width = 20): string {
  const filled = Math.round(fraction * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

export function createProgress(label: string, stream: NodeJS.WriteStream = process.stderr, now: () => number = Date.now): Progress {
  const tty = Boolean(stream.isTTY) && process.env.TERM !== "dumb";
  const started = now();
  let lastPhase: Phase | undefined;
  let lastPlainLine = 0;
  let lineOpen = false;
  const elapsed = () => formatDuration((now() - started) / 1000);

  const closeLine = () => {
    if (lineOpen) stream.write("\n");
    lineOpen = false;
  };
  return {
    status(status) {
      const detail = phaseDetail(status);
      if (tty) {
        const width = stream.columns || 100;
        const graph = detail.fraction === undefined ? "" : ` ${bar(detail.fraction)}`;
        const line = `${label} ${status.phase}${graph} ${detail.text} ${elapsed()}`.slice(0, width - 1);
        stream.write(`\r\x1b[K${line}`);
        lineOpen = true;
        return;
      }
      const due = now() - lastPlainLine >= 30_000;
      if (status.phase !== lastPhase || due) {
        stream.write(`${label} ${elapsed()} phase=${status.phase}${detail.text ? ` ${detail.text}` : ""}\n`);
        lastPlainLine = now();
      }
      lastPhase = status.phase;
    },
    note(message) {
      closeLine();
      stream.write(`${label} ${message}\n`);
    },
    end: closeLine,
  };
}
