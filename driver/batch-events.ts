/**
 * What a batch reports as it goes: one event per change of a job's state, plus the batch's start and end. The live
 * view (driver/batch-view.ts) draws them on a terminal or prints them as plain lines; with `--json` each is one JSON
 * line on stdout for scripts, the batch's result (BatchResult) the last line.
 */

/** Where a subject's job stands in the batch. */
export type JobStage = "queued" | "launching" | "running" | "finishing" | "done";

interface EventBase {
  /** ISO time of the event. */
  at: string;
}

export type BatchEvent =
  | (EventBase & {
      event: "batch-start";
      batchId: string;
      /** Subjects in the batch, and of them: to run now, skipped (succeeded before), held by another driver, adopted from an earlier run of the same batch. */
      total: number;
      toRun: number;
      skipped: number;
      held: number;
      adopted: number;
      /** Resumed: subjects whose job ended in the earlier run of this batch (their result kept, not run again). */
      endedEarlier?: number;
      /** Jobs in flight at most, and engine workers (stack create/destroy) at most. */
      concurrency: number;
      engineConcurrency: number;
      /** USD per hour of one job's compute, when known: spend so far counts running jobs by it. */
      pricePerHour?: number;
      logDir: string;
    })
  | (EventBase & { event: "job-launching"; subject: string; jobId: string; attempt: number })
  | (EventBase & { event: "job-running"; subject: string; jobId: string; instanceId: string; adopted: boolean })
  /** The agent's phase changed (inputs, run, outputs, ...). */
  | (EventBase & { event: "job-phase"; subject: string; jobId: string; phase: string })
  | (EventBase & { event: "job-finishing"; subject: string; jobId: string; reason?: string })
  | (EventBase & { event: "job-retry"; subject: string; jobId: string; reason: string; attempt: number })
  | (EventBase & {
      event: "job-done";
      subject: string;
      jobId?: string;
      /** succeeded, failed, error, interrupted, skipped, held (as BatchEntry.outcome). */
      outcome: string;
      reason?: string;
      costUsd?: number;
      seconds?: number;
      /** Who holds a held subject, and the like: the entry's message. */
      message?: string;
      /** The job ended in the earlier run of this batch (resumed): counted, not in this run's rate. */
      earlierRun?: boolean;
    })
  /** A line worth a person's attention (a job's progress note, a warning), with the subject it concerns if any. */
  | (EventBase & { event: "note"; subject?: string; message: string })
  | (EventBase & { event: "batch-end"; batchId: string; exitCode: number; counts: Record<string, number>; costUsd: number; unknownCostSubjects?: number; spotSavedUsd?: number; interruptionCostUsd?: number; spotNetSavedUsd?: number; summaryPath: string });

export type BatchEventName = BatchEvent["event"];

/** An event before it is stamped with its time (each member of the union without `at`). */
export type UnstampedEvent = BatchEvent extends infer E ? (E extends BatchEvent ? Omit<E, "at"> : never) : never;

/** Something that takes the batch's events (the view, a test's recorder). */
export interface BatchEventSink {
  event(e: BatchEvent): void;
  /** The batch is over: leave the terminal as a log (no live block redrawn any more). */
  close(): void;
}

/** An event stamped now. */
export function stamped(e: UnstampedEvent, now: Date = new Date()): BatchEvent {
  return { ...e, at: now.toISOString() } as BatchEvent;
}
