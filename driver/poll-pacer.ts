/**
 * One pace for every wait of a batch: each look at a job (its marker, its status, its compute) takes a turn, and the
 * turns come at most `perSecond` a second, however many jobs are in flight. A few jobs are looked at every poll
 * interval; a thousand share the budget, each looked at less often, so the batch stays within S3's and EC2's request
 * rates instead of being throttled by them (EC2's describes are also coalesced: driver/platform.ts).
 */
import { sleep } from "./wait";

/** Looks at jobs per second (each is 2 S3 reads and a share of one EC2 describe) unless CLOUDCOMPUTE_POLLS_PER_SECOND says otherwise. */
export const DEFAULT_POLLS_PER_SECOND = 20;

export class PollPacer {
  private nextTurn = 0;
  constructor(readonly perSecond: number = Number(process.env.CLOUDCOMPUTE_POLLS_PER_SECOND ?? DEFAULT_POLLS_PER_SECOND)) {
    if (!(this.perSecond > 0)) throw new Error(`polls per second must be positive, not ${perSecond}`);
  }

  /** Resolve at this caller's turn (rejects with InterruptedError if `signal` aborts first). */
  async turn(signal: AbortSignal): Promise<void> {
    const now = Date.now();
    const at = Math.max(now, this.nextTurn);
    this.nextTurn = at + 1000 / this.perSecond;
    if (at > now) await sleep(at - now, signal);
  }

  /** How often each of `jobs` waiting jobs is looked at, at best (ms). */
  intervalFor(jobs: number, pollIntervalMs: number): number {
    return Math.max(pollIntervalMs, (jobs * 1000) / this.perSecond);
  }
}
