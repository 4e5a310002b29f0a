/**
 * Job failures: every error the agent reports carries one FailureReason (job/records.ts) and the phase it hit.
 * Anything else that escapes is classified here, so the completion marker always names a reason.
 */
import { errorMessage } from "../common/errors";
import type { FailureReason, Phase } from "../job/records";

export class JobFailure extends Error {
  constructor(
    readonly reason: FailureReason,
    message: string,
    readonly phase?: Phase,
  ) {
    super(message);
    this.name = "JobFailure";
  }
}

/** ENOSPC anywhere (our writes, a child's message) means the disk is full, whatever phase it happened in. */
export function isOutOfDisk(err: unknown): boolean {
  if (!err || typeof err !== "object") return false;
  const e = err as { code?: unknown; message?: unknown; cause?: unknown };
  if (e.code === "ENOSPC") return true;
  if (typeof e.message === "string" && /ENOSPC|no space left on device/i.test(e.message)) return true;
  return e.cause !== undefined && e.cause !== err && isOutOfDisk(e.cause);
}

/** Turn any error into a JobFailure for `phase`; out-of-disk wins over whatever the error said. */
export function toJobFailure(err: unknown, phase: Phase, fallback: FailureReason = "internal-error"): JobFailure {
  if (isOutOfDisk(err)) {
    const message = err instanceof JobFailure && err.reason === "out-of-disk" ? err.message : `out of disk: ${errorMessage(err)}`;
    return new JobFailure("out-of-disk", message, (err as JobFailure).phase ?? phase);
  }
  if (err instanceof JobFailure) return err.phase ? err : new JobFailure(err.reason, err.message, phase);
  return new JobFailure(fallback, errorMessage(err), phase);
}
