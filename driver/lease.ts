/**
 * The driver's side of the subject's run lease (common/lease.ts): taken before anything is created, kept renewed
 * across every attempt of the job (retries keep it), released after teardown. Losing it (another driver took it over
 * after we failed to renew for a whole period) aborts `lost`: the job is torn down and reported as lease-lost.
 */
import * as os from "node:os";
import { describeHeldLease, LEASE_HELD_PHRASE, LeaseHeldError, leaseIsFree, readLease, takeLease, type LeaseHandle, type SubjectLease } from "../common/lease";
import { errorMessage } from "../common/errors";
import { s3ClientFor } from "../common/s3-client";
import { jobLayout } from "../job/layout";
import type { JobSpec, OutputLayout } from "../job/spec";
import { BadInputError, InfraError } from "./errors";
import { currentOwner } from "./owner";

/** Another driver runs the subject: refused before anything exists (exit 2, like other refusals). */
export class SubjectLeasedError extends BadInputError {
  constructor(readonly lease: SubjectLease, message = describeHeldLease(lease)) {
    super(message);
  }
}

export interface HeldLease {
  handle: LeaseHandle;
  /** Aborted (reason: a LeaseLostError) when another driver took the lease over. */
  lost: AbortSignal;
  release(): Promise<void>;
}

function userName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? "unknown";
  }
}

export async function holdSubjectLease(
  spec: Pick<JobSpec, "jobId" | "subject" | "outputs" | "launchId">,
  periodSeconds: number,
  log: (line: string) => void,
  takeOverFrom?: (lease: SubjectLease) => boolean,
): Promise<HeldLease> {
  const location = jobLayout(spec).subjectLease;
  const owner = currentOwner();
  let handle: LeaseHandle;
  try {
    handle = await takeLease({
      client: s3ClientFor(location.bucket),
      location,
      subject: spec.subject,
      holder: { user: userName(), host: owner.host, pid: owner.pid, pidStart: owner.pidStart, jobId: spec.jobId, ...(spec.launchId ? { launchId: spec.launchId } : {}) },
      periodSeconds,
      takeOverFrom,
    });
  } catch (err) {
    if (err instanceof LeaseHeldError) throw new SubjectLeasedError(err.lease, err.message);
    throw new InfraError(`the subject's run lease s3://${location.bucket}/${location.key} could not be taken: ${errorMessage(err)}; nothing was created`);
  }
  const lost = new AbortController();
  handle.keepRenewed((err) => {
    log(`${err.message}; stopping and tearing down this job`);
    lost.abort(err);
  });
  return {
    handle,
    lost: lost.signal,
    release: () => handle.release().catch((err) => log(`warning: ${errorMessage(err)}`)),
  };
}

/** Who holds the subject's lease now (a live lease only), for a batch to report before it starts a worker. */
export async function liveLeaseOf(outputPrefix: string, subject: string, layout: OutputLayout = "subject"): Promise<{ lease: SubjectLease; message: string } | undefined> {
  const location = jobLayout({ jobId: "-", subject, outputs: { prefix: outputPrefix, layout } }).subjectLease;
  const read = await readLease(s3ClientFor(location.bucket), location);
  return leaseIsFree(read) ? undefined : { lease: read.lease!, message: describeHeldLease(read.lease!, new Date(), read) };
}

/** Does a worker's error line say another driver holds the subject? */
export function isLeaseRefusal(message: string | undefined): boolean {
  return Boolean(message && message.includes(` ${LEASE_HELD_PHRASE} `) && message.startsWith("subject "));
}
