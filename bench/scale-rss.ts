/**
 * Resident memory of a process tree (the process and all its descendants), from /proc, sampled every second for
 * `npm run bench -- scale`. Linux only: elsewhere every sample is 0 and the figures say nothing.
 */
import * as fs from "node:fs";

/** Each live process's parent, from /proc/<pid>/stat. */
function parents(): Map<number, number> {
  const map = new Map<number, number>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      map.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  return map;
}

/** The process's resident set in MB (VmRSS), 0 if it is gone. */
export function rssMb(pid: number): number {
  try {
    const line = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
    return line ? Number(line.split(/\s+/)[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** `root` and its descendants. */
function subtree(root: number, childrenOf: Map<number, number[]>): number[] {
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(childrenOf.get(out[i]) ?? []));
  return out;
}

export interface TreeSample {
  /** ms since the sampler started. */
  t: number;
  /** The whole tree's RSS (MB). */
  treeMb: number;
  /** The largest subtree below one direct child of the root (an engine worker and its Pulumi CLI and plugins). */
  largestChildMb: number;
  processes: number;
}

export function sampleTree(root: number, startedAt: number): TreeSample {
  const childrenOf = new Map<number, number[]>();
  for (const [pid, parent] of parents()) childrenOf.set(parent, [...(childrenOf.get(parent) ?? []), pid]);
  const all = subtree(root, childrenOf);
  const sum = (pids: number[]) => pids.reduce((total, pid) => total + rssMb(pid), 0);
  const largestChildMb = Math.max(0, ...(childrenOf.get(root) ?? []).map((child) => sum(subtree(child, childrenOf))));
  return { t: Date.now() - startedAt, treeMb: sum(all), largestChildMb, processes: all.length };
}

/** Samples `root`'s tree every `everyMs` until stopped; `mark` tags the time of an event (e.g. "all in flight"). */
export class TreeSampler {
  readonly samples: TreeSample[] = [];
  readonly marks = new Map<string, number>();
  private readonly startedAt = Date.now();
  private readonly timer: NodeJS.Timeout;
  constructor(readonly root: number, everyMs = 1000) {
    this.take();
    this.timer = setInterval(() => this.take(), everyMs);
  }
  take(): TreeSample {
    const sample = sampleTree(this.root, this.startedAt);
    if (sample.treeMb > 0) this.samples.push(sample);
    return sample;
  }
  mark(name: string): void {
    this.take();
    this.marks.set(name, Date.now() - this.startedAt);
  }
  stop(): void {
    clearInterval(this.timer);
  }
  /** The largest of `field` over the samples from mark `from` (or the start) to mark `to` (or the end). */
  peak(field: "treeMb" | "largestChildMb", from?: string, to?: string): number {
    const lo = from ? (this.marks.get(from) ?? Infinity) : -Infinity;
    const hi = to ? (this.marks.get(to) ?? Infinity) : Infinity;
    return Math.max(0, ...this.samples.filter((s) => s.t >= lo && s.t <= hi).map((s) => s[field]));
  }
}
