/**
 * One subject, one running job, across machines: a lease object per subject in the output prefix
 * (`_cloudcompute/subjects/<folder>/lease.json`, job/layout.ts) that the driver holds while its job runs.
 * Taken with PutObject If-None-Match "*" (or If-Match the etag of an expired or released lease: of two takers only
 * one write passes), renewed and released only If-Match the etag we last wrote, so a holder that lost it finds out
 * instead of overwriting the new holder. The driver writes it with the user's credentials; the job's instance role
 * may not touch it (infra/policy.ts grants it the results pointer only).
 *
 * A lease counts as expired by S3's own clock: the Date of the read's answer past S3's LastModified plus the period,
 * so neither a holder nor a taker whose clock is minutes off can make a live lease look expired (only without a Date
 * header does this machine's clock count, past both the holder's `expiresAt` and LastModified plus the period).
 * A holder that could not renew until its lease expired stops trusting it (LeaseLostError): another may take it.
 */
import { randomUUID } from "node:crypto";
import { DeleteObjectCommand, GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { S3Location } from "../job/s3url";
import { errorMessage } from "./errors";
import { httpStatusOf, withRetries } from "./retry";
import { isWriteConflict, putJsonIfUnchanged } from "./conditional-write";

/** Default lease period: a dead holder's lease frees within minutes, a network hiccup of a minute or two is survived. */
export const DEFAULT_LEASE_SECONDS = 300;
/** The holder renews this many times per period (a renewal may fail a few times before the lease runs out). */
const RENEWALS_PER_PERIOD = 5;
/** One lease request may take this long: a black-holed connection must not stall renewals past the lease's expiry. */
const REQUEST_TIMEOUT_MS = 20_000;

export interface LeaseHolder {
  user: string;
  host: string;
  pid: number;
  /** The process's identity (driver/owner.ts), so a reused PID is not taken for the holder. */
  pidStart?: string;
  jobId: string;
  launchId?: string;
}

export interface SubjectLease {
  apiVersion: "cloudcompute/v1";
  kind: "subject-lease";
  subject: string;
  /** Fresh per take: how a holder recognises its own write when an answer was lost. */
  leaseId: string;
  holder: LeaseHolder;
  since: string;
  renewedAt: string;
  expiresAt: string;
  periodSeconds: number;
  /** Written instead of a delete where a store has no conditional delete: free to take. */
  released?: boolean;
}

export interface LeaseRead {
  lease?: SubjectLease;
  etag?: string;
  lastModified?: Date;
  /** S3's clock when it answered the read (its Date header). */
  serverDate?: Date;
}

/** The phrase every refusal starts its reason with (a batch tells a held subject from other refusals by it). */
export const LEASE_HELD_PHRASE = "is being run by";

/** Another driver holds the subject's lease: nothing was created. */
export class LeaseHeldError extends Error {
  constructor(
    readonly lease: SubjectLease,
    now: Date = new Date(),
    read?: LeaseRead,
  ) {
    super(describeHeldLease(lease, now, read));
    this.name = "LeaseHeldError";
  }
}

/** Our lease was taken over (we could not renew it for a whole period) or could not be kept. */
export class LeaseLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LeaseLostError";
  }
}

/**
 * The refusal a user reads. With the read's S3 times, "ago" and the expiry are S3's (when takers will find it free),
 * not the holder's clock, which may be minutes off: a live lease must not look abandoned, nor a dead one look eternal.
 */
export function describeHeldLease(lease: SubjectLease, now: Date = new Date(), read?: LeaseRead): string {
  const h = lease.holder;
  const s3Clock = read?.serverDate && read.lastModified ? { now: read.serverDate.getTime(), written: read.lastModified.getTime() } : undefined;
  const ago = Math.max(0, Math.round(((s3Clock?.now ?? now.getTime()) - (s3Clock?.written ?? Date.parse(lease.renewedAt))) / 1000));
  const expires = s3Clock ? new Date(s3Clock.written + lease.periodSeconds * 1000 + 1000).toISOString() : lease.expiresAt;
  return (
    `subject ${lease.subject} ${LEASE_HELD_PHRASE} ${h.user}@${h.host} (pid ${h.pid}, job ${h.jobId}) since ${lease.since} ` +
    `(lease last renewed ${ago} s ago, every ${Math.round(lease.periodSeconds / RENEWALS_PER_PERIOD)} s while that driver lives; expires ${expires}); ` +
    `wait for it, or if that driver is dead the lease expires at ${expires} and the subject can be run then`
  );
}

function parseLease(text: string): SubjectLease | undefined {
  try {
    const value = JSON.parse(text) as Partial<SubjectLease>;
    if (value?.kind !== "subject-lease" || typeof value.leaseId !== "string" || typeof value.holder !== "object" || !value.holder) return undefined;
    // A lease whose times or period cannot be read could never expire: it is unreadable, not held.
    const times = [value.since, value.renewedAt, value.expiresAt].map((t) => (typeof t === "string" ? Date.parse(t) : NaN));
    if (times.some(Number.isNaN) || typeof value.periodSeconds !== "number" || !(value.periodSeconds > 0)) return undefined;
    return value as SubjectLease;
  } catch {
    return undefined;
  }
}

const isMissing = (err: unknown) => httpStatusOf(err) === 404 || (err as { name?: string }).name === "NoSuchKey";
/** 412: the object changed (or exists); 409: a concurrent conditional write to the same key won. */

export async function readLease(client: S3Client, loc: S3Location): Promise<LeaseRead> {
  try {
    let serverDate: Date | undefined;
    const res = await withRetries(
      () => {
        const command = new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key });
        // S3's clock at the answer: with LastModified it dates the lease without trusting this machine's clock.
        command.middlewareStack.add(
          (next) => async (args) => {
            const out = await next(args);
            const date = (out.response as { headers?: Record<string, string> }).headers?.date;
            if (date && !Number.isNaN(Date.parse(date))) serverDate = new Date(date);
            return out;
          },
          { step: "deserialize", name: "leaseServerDate" },
        );
        return client.send(command, { abortSignal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      },
      { attempts: 4 },
    );
    // An unreadable object is still an object: its etag lets a taker replace it, and only conditionally.
    return { lease: parseLease(await res.Body!.transformToString()), etag: res.ETag, lastModified: res.LastModified, serverDate };
  } catch (err) {
    if (isMissing(err)) return {};
    throw err;
  }
}

/** Is the lease read free to take: none, released, unreadable, or expired by both its own and S3's clock? */
export function leaseIsFree(read: LeaseRead, now: Date = new Date()): boolean {
  if (!read.etag) return true;
  const lease = read.lease;
  if (!lease || lease.released) return true;
  const period = lease.periodSeconds * 1000;
  // Both S3's clock; a second's margin for their whole-second resolution.
  if (read.serverDate && read.lastModified) return read.serverDate.getTime() > read.lastModified.getTime() + period + 1000;
  const written = read.lastModified?.getTime() ?? Date.parse(lease.renewedAt);
  return now.getTime() > Date.parse(lease.expiresAt) && now.getTime() > written + lease.periodSeconds * 1000;
}

export interface TakeOptions {
  client: S3Client;
  location: S3Location;
  subject: string;
  holder: LeaseHolder;
  periodSeconds?: number;
  now?: () => Date;
  /**
   * A live lease this taker may take over all the same: one its own earlier process held and is provably gone from
   * (a batch resumed after its process was killed). Taken If-Match its etag, like an expired one.
   */
  takeOverFrom?: (lease: SubjectLease) => boolean;
}

/** Write `lease` only if the object is still `expected` (undefined: only if there is none). The new etag, or "conflict". */
function writeLease(client: S3Client, loc: S3Location, lease: SubjectLease, expected: string | undefined, timeoutMs = REQUEST_TIMEOUT_MS): Promise<string | "conflict"> {
  return putJsonIfUnchanged(client, loc, lease, expected, 5, timeoutMs);
}

/** A lease this process holds. */
export class LeaseHandle {
  private timer?: NodeJS.Timeout;
  private renewing: Promise<void> = Promise.resolve();
  private lostError?: LeaseLostError;
  private releasedAlready = false;

  constructor(
    private readonly options: Required<Pick<TakeOptions, "client" | "location">> & { now: () => Date },
    public lease: SubjectLease,
    private etag: string,
  ) {}

  get lost(): LeaseLostError | undefined {
    return this.lostError;
  }

  /** Record the job (and launch) now running under the lease; written at the next renewal. */
  setJob(jobId: string, launchId?: string): void {
    this.lease = { ...this.lease, holder: { ...this.lease.holder, jobId, ...(launchId ? { launchId } : {}) } };
  }

  /** Extend the lease by a period, only if it is still ours; throws LeaseLostError if it is not. */
  async renew(): Promise<void> {
    if (this.lostError) throw this.lostError;
    const now = this.options.now();
    const next: SubjectLease = { ...this.lease, renewedAt: now.toISOString(), expiresAt: new Date(now.getTime() + this.lease.periodSeconds * 1000).toISOString() };
    // Each try within a renewal interval: a hung request must leave time for the next before the lease runs out.
    const written = await writeLease(this.options.client, this.options.location, next, this.etag, Math.min(REQUEST_TIMEOUT_MS, Math.max(1000, this.renewEveryMs())));
    if (written === "conflict") {
      // Our own earlier write whose answer was lost looks like a conflict: the stored lease then is ours.
      const read = await readLease(this.options.client, this.options.location).catch(() => ({}) as LeaseRead);
      if (read.lease?.leaseId === this.lease.leaseId && read.etag && !read.lease.released) {
        this.etag = read.etag;
        this.lease = read.lease;
        return this.renew();
      }
      const other = read.lease && read.lease.leaseId !== this.lease.leaseId ? ` by ${read.lease.holder.user}@${read.lease.holder.host} (pid ${read.lease.holder.pid}, job ${read.lease.holder.jobId}) at ${read.lease.since}` : "";
      this.lostError = new LeaseLostError(`the lease on subject ${this.lease.subject} was taken over${other || " (it is gone)"}: this driver could not renew it within its period`);
      throw this.lostError;
    }
    this.etag = written;
    this.lease = next;
  }

  /**
   * Renew now, before something that needs the lease (an attempt's launch): a conflict loses it (LeaseLostError), as
   * does a failure once the lease we last wrote has expired; a transient failure before that is no reason to fail.
   */
  async confirm(): Promise<void> {
    try {
      await this.renew();
    } catch (err) {
      if (err instanceof LeaseLostError) throw err;
      const expired = this.expiredBy(err);
      if (expired) throw expired;
    }
  }

  /** The loss to report if our lease has expired while renewals failed with `err`; undefined while it has not. */
  private expiredBy(err: unknown): LeaseLostError | undefined {
    if (this.lostError) return this.lostError;
    if (this.options.now().getTime() < Date.parse(this.lease.expiresAt)) return undefined;
    this.lostError = new LeaseLostError(
      `the lease on subject ${this.lease.subject} could not be renewed before it expired at ${this.lease.expiresAt} (${errorMessage(err)}): another driver may now run the subject`,
    );
    return this.lostError;
  }

  /**
   * Renew every period/5 until released; `onLost` is called once if the lease is taken over. A failed renewal
   * (network) is retried at the next tick: only a conflict loses the lease.
   */
  keepRenewed(onLost: (err: LeaseLostError) => void): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.renewing = this.renewing
        .then(() => this.renew())
        .catch((err) => {
          if (!(err instanceof LeaseLostError)) {
            // Transient: retried at the next tick, but only while the lease we last wrote has not expired.
            const expired = this.expiredBy(err);
            if (!expired) return;
            err = expired;
          }
          this.stop();
          onLost(err as LeaseLostError);
        });
    }, this.renewEveryMs());
    this.timer.unref();
  }

  private renewEveryMs(): number {
    return Math.max(1000, Math.floor((this.lease.periodSeconds * 1000) / RENEWALS_PER_PERIOD));
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Give the lease up if it is still ours (a delete If-Match our etag; else a released record If-Match). */
  async release(): Promise<void> {
    this.stop();
    await this.renewing;
    if (this.releasedAlready || this.lostError) return;
    this.releasedAlready = true;
    const { client, location } = this.options;
    try {
      await withRetries(() => client.send(new DeleteObjectCommand({ Bucket: location.bucket, Key: location.key, IfMatch: this.etag }), { abortSignal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }), { attempts: 5 });
      return;
    } catch (err) {
      if (isWriteConflict(err) || isMissing(err)) return; // not ours any more: the new holder's lease stays
      // A store without conditional deletes: mark it released, still only if it is ours.
      const written = await writeLease(client, location, { ...this.lease, released: true, renewedAt: this.options.now().toISOString() }, this.etag).catch((e) => {
        throw new Error(`the lease on subject ${this.lease.subject} could not be released (${errorMessage(err)}; ${errorMessage(e)}): it expires at ${this.lease.expiresAt}`);
      });
      if (written !== "conflict") this.etag = written;
    }
  }
}

/**
 * Take the subject's lease, or throw LeaseHeldError naming its live holder. An expired or released lease is taken
 * over with If-Match its etag, so of several takers exactly one wins; the others see the winner's live lease.
 */
export async function takeLease(options: TakeOptions): Promise<LeaseHandle> {
  const now = options.now ?? (() => new Date());
  const periodSeconds = options.periodSeconds ?? DEFAULT_LEASE_SECONDS;
  const leaseId = randomUUID();
  for (let attempt = 1; ; attempt++) {
    const read = await readLease(options.client, options.location);
    if (read.lease?.leaseId === leaseId && read.etag) return new LeaseHandle({ ...options, now }, read.lease, read.etag); // our write landed, its answer did not
    if (!leaseIsFree(read, now()) && !options.takeOverFrom?.(read.lease!)) throw new LeaseHeldError(read.lease!, now(), read);
    const at = now();
    const lease: SubjectLease = {
      apiVersion: "cloudcompute/v1",
      kind: "subject-lease",
      subject: options.subject,
      leaseId,
      holder: options.holder,
      since: at.toISOString(),
      renewedAt: at.toISOString(),
      expiresAt: new Date(at.getTime() + periodSeconds * 1000).toISOString(),
      periodSeconds,
    };
    const written = await writeLease(options.client, options.location, lease, read.etag);
    if (written !== "conflict") return new LeaseHandle({ ...options, now }, lease, written);
    // Someone wrote between our read and our write: look again (it is then usually a live lease: refused).
    if (attempt >= 10) throw new Error(`the lease on subject ${options.subject} (${options.location.key}) keeps changing: could not take it`);
  }
}
