/**
 * How long a job needs its presigned URLs, and when a URL stops working. Shared by the driver (refuses a URL that
 * would die before the job could finish) and the agent (says "expired at ..." when S3 refuses one).
 */
import type { LimitsSpec } from "./spec";

/**
 * Minutes the instance may spend booting (package installs, Docker start, agent download) before the agent's own
 * runtime clock starts. The watchdog allows this on top of max runtime + grace.
 */
export const BOOT_ALLOWANCE_MINUTES = 15;

/** Slack on top of the job's own lifetime: the driver's path to launch, a retry of a lost instance's boot. */
export const PRESIGNED_MARGIN_MINUTES = 30;

/** SigV4 presigned URLs live at most 7 days. */
export const SIGV4_MAX_SECONDS = 7 * 24 * 3600;

/** Minutes from launch until the watchdog ends the job at the latest, plus the margin: what a URL must outlive. */
export function neededUrlMinutes(limits: Pick<LimitsSpec, "maxRuntimeMinutes" | "graceMinutes">): number {
  return BOOT_ALLOWANCE_MINUTES + limits.maxRuntimeMinutes + limits.graceMinutes + PRESIGNED_MARGIN_MINUTES;
}

/** When a presigned URL stops working: SigV4 `X-Amz-Date` + `X-Amz-Expires`, or SigV2 `Expires` (epoch seconds). */
export function presignedExpiry(url: string): Date | undefined {
  let params: URLSearchParams;
  try {
    params = new URL(url).searchParams;
  } catch {
    return undefined;
  }
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(params.get("X-Amz-Date") ?? "");
  const expires = params.get("X-Amz-Expires");
  if (date && expires !== null && /^\d+$/.test(expires)) {
    const [, y, mo, d, h, mi, s] = date;
    return new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) + Number(expires) * 1000);
  }
  const v2 = params.get("Expires");
  if (v2 !== null && /^\d+$/.test(v2)) return new Date(Number(v2) * 1000);
  return undefined;
}

function queryOf(url: string): URLSearchParams {
  try {
    return new URL(url).searchParams;
  } catch {
    return new URLSearchParams();
  }
}

export interface ExpiryCheck {
  /** Inputs whose URL dies before the job could end: refuse. */
  problems: string[];
  /** Inputs whose URL does not say when it dies. */
  warnings: string[];
}

/** Every presigned input against the time the job may need it: now + boot allowance + max runtime + grace + margin. */
export function checkPresignedExpiry(
  inputs: ReadonlyArray<{ name: string; url: string; access: string }>,
  limits: Pick<LimitsSpec, "maxRuntimeMinutes" | "graceMinutes">,
  now: Date,
): ExpiryCheck {
  const problems: string[] = [];
  const warnings: string[] = [];
  const minutes = neededUrlMinutes(limits);
  const needed = new Date(now.getTime() + minutes * 60_000);
  for (const input of inputs) {
    if (input.access !== "presigned") continue;
    const params = queryOf(input.url);
    const lifetime = params.get("X-Amz-Expires");
    if (lifetime !== null && /^\d+$/.test(lifetime) && Number(lifetime) > SIGV4_MAX_SECONDS) {
      problems.push(`input "${input.name}": X-Amz-Expires ${lifetime} is more than S3 accepts (${SIGV4_MAX_SECONDS} s, 7 days): S3 refuses the URL whenever it is used; get a URL signed for at most 7 days`);
      continue;
    }
    if ([...params.keys()].some((name) => name.toLowerCase() === "x-amz-security-token")) {
      warnings.push(`input "${input.name}": the presigned URL was signed with temporary credentials (X-Amz-Security-Token): it stops working when they expire, which may be before its stated expiry`);
    }
    const expiry = presignedExpiry(input.url);
    if (!expiry) {
      warnings.push(`input "${input.name}": the presigned URL does not say when it expires (no X-Amz-Date/X-Amz-Expires or Expires); if it dies while the job runs, the job fails`);
      continue;
    }
    if (expiry.getTime() >= needed.getTime()) continue;
    const left = Math.floor((expiry.getTime() - now.getTime()) / 60_000);
    const fits = left - (minutes - limits.maxRuntimeMinutes);
    problems.push(
      `input "${input.name}": the presigned URL expires at ${expiry.toISOString()} (${left <= 0 ? "already expired" : `in ${left} min`}), ` +
        `but the job may need it until ${needed.toISOString()} (boot allowance ${BOOT_ALLOWANCE_MINUTES} + max runtime ${limits.maxRuntimeMinutes} + grace ${limits.graceMinutes} + margin ${PRESIGNED_MARGIN_MINUTES} min): ` +
        `get a fresh URL${fits >= 1 ? `, or give a shorter --max-runtime (at most ${fits})` : ""}`,
    );
  }
  return { problems, warnings };
}
