/** The end of every job whose stack exists, and of `cancel`: refresh, destroy, confirm empty, reclaim. */
import type { Stack } from "@pulumi/pulumi/automation";
import { ConcurrentUpdateError } from "@pulumi/pulumi/automation";
import { InfraError } from "./errors";
import { resourceCount } from "./engine";
import type { Platform } from "./platform";
import { pendingCreates } from "./reclaim";
import { withAwsBackoff } from "./backoff";

/**
 * Refresh (a compute that ended by itself is gone, and a cut-off update's pending creates are dropped), destroy
 * keeping the stack and its history, confirm the stack holds nothing, then delete what the pending creates stood
 * for (found by tag, never just cleared: driver/reclaim.ts). A lock left by our own interrupted update is cleared
 * once. Returns what the reclaim deleted.
 */
export async function teardown(
  stack: Stack,
  jobId: string,
  message: string,
  opts: { onOutput?: (text: string) => void; refresh?: boolean; platform: Platform; region?: string; log?: (line: string) => void },
): Promise<string[]> {
  const { onOutput, refresh = true, platform } = opts;
  const pending = await pendingCreates(stack);
  // Pending creates are dropped by a refresh only; what they stood for is deleted by the reclaim below.
  const mustRefresh = refresh || pending.length > 0;
  const withLockRetry = async <T>(operation: () => Promise<T>): Promise<T> => {
    try {
      return await operation();
    } catch (err) {
      if (!(err instanceof ConcurrentUpdateError)) throw err;
      await stack.cancel();
      return operation();
    }
  };
  if (mustRefresh) {
    try {
      await withLockRetry(() => stack.refresh({ onOutput, clearPendingCreates: true, message: `cloudcompute job ${jobId}: refresh before destroy` }));
    } catch {
      // Destroy works from the recorded state; a failed refresh must not keep resources alive.
    }
  }
  // A throttled delete is retried after a backoff: giving up would leave the job's resources behind.
  await withAwsBackoff("destroy", () => withLockRetry(() => stack.destroy({ onOutput, message })), { kinds: ["throttled"], log: opts.log ?? (() => undefined) });
  const left = await resourceCount(stack);
  if (left > 0) throw new InfraError(`the stack of job ${jobId} still holds ${left} resource(s) after destroy`);
  return platform.reclaim(jobId, opts.region, pending);
}
