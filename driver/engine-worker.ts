/**
 * The worker's side of driver/engine-workers.ts: `run --engine-worker`, started by a batch with the job's flags in
 * its environment and its request on stdin. A launch resolves the subject's job afresh (a retry's presigned URLs are
 * asked for or signed again), creates its stack and brings it up; a finish tears a job down. The outcome is the last
 * line of stdout. The batch holds the subject's lease; the worker only does the engine's part.
 */
import { errorMessage } from "../common/errors";
import { DriverError, ExitCode } from "./errors";
import type { SpecFlags } from "./options";
import { SUBJECT_INPUTS_FLAG } from "./worker-env";
import { readEngineRequest, type FinishReply, type LaunchReply } from "./engine-workers";
import { finishJob, launchJob } from "./job-phases";
import { resolvePackageJob } from "./nda-package";
import { inputSignerFor } from "./input-signing";
import { stagedSpec } from "./preflight";

export async function engineWorkerMain(flags: SpecFlags, signal: AbortSignal, print: (reply: LaunchReply | FinishReply) => void): Promise<number> {
  const request = await readEngineRequest();
  const phase = { verbose: Boolean(flags.verbose), pricePerHour: flags["price-per-hour"] as number | undefined };
  try {
    if (request.op === "finish") {
      const result = await finishJob(request.context, request.ending, phase);
      print({ kind: "finished", result });
      return result.exitCode;
    }
    const rowInputs = flags[SUBJECT_INPUTS_FLAG] === undefined ? undefined : (JSON.parse(String(flags[SUBJECT_INPUTS_FLAG])) as { urls: Record<string, string>; where: string });
    const resolved = await resolvePackageJob(flags, {}, rowInputs ? { inputOverrides: rowInputs } : {}, await inputSignerFor(flags));
    const instance = { ...resolved.spec.instance, spot: resolved.spec.instance.spot && !request.onDemand };
    const attemptJob = { ...resolved, spec: { ...resolved.spec, jobId: request.jobId, instance } };
    const spec = { ...stagedSpec(attemptJob), launchId: request.launchId };
    const outcome = await launchJob(attemptJob, spec, { ...phase, signal, owner: request.owner, attempt: request.attempt, retryOf: request.retryOf });
    if (outcome.kind === "running") {
      print({ kind: "running", context: outcome.context });
      return ExitCode.ok;
    }
    print({ kind: "ended", result: outcome.result });
    return outcome.result.exitCode;
  } catch (err) {
    // Refused before anything was created (bad input, a missing CLI): the batch reports it for the subject.
    const exitCode = err instanceof DriverError ? err.exitCode : ExitCode.infra;
    print({ kind: "refused", exitCode, message: errorMessage(err) });
    return exitCode;
  }
}
