/**
 * Checks before anything of a job is created: the spec as it will be staged, the plugins its platform needs, and a
 * passphrase when its secrets would otherwise sit in state decryptable by anyone.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { JobSpec, emptyPassphraseProblem } from "../job/spec";
import { readAgentBundle, withAgent } from "../infra/index";
import { errorMessage } from "../common/errors";
import { BadInputError, InfraError } from "./errors";
import { engineEnv, findPulumi } from "./engine";
import type { Platform } from "./platform";
import type { ResolvedJob } from "./options";

/**
 * The resource plugins the platform needs, in place before anything exists: a missing one is a setup problem to fix
 * with one command (printed with the CLI's full path), not an `up` that fails after the stack was made.
 */
export async function ensurePlugins(platform: Platform): Promise<void> {
  if (platform.requiredPlugins.length === 0) return;
  const pulumi = await findPulumi();
  const run = (args: string[]) =>
    promisify(execFile)(pulumi.command, args, { env: { ...process.env, ...engineEnv() }, timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 });
  const listed = await run(["plugin", "ls", "--json"]);
  const installed = (JSON.parse(listed.stdout.trim() || "[]") ?? []) as Array<{ name: string; kind: string; version: string }>;
  for (const plugin of platform.requiredPlugins) {
    const version = plugin.version.replace(/^v/, "");
    if (installed.some((p) => p.name === plugin.name && p.kind === "resource" && p.version.replace(/^v/, "") === version)) continue;
    try {
      await run(["plugin", "install", "resource", plugin.name, version]);
    } catch (err) {
      throw new InfraError(
        `the Pulumi ${plugin.name} provider ${version}, which ${platform.name} jobs need, is not installed and could not be downloaded ` +
          `(${firstLineOf(errorMessage(err))}). Nothing was created. Install it with:\n  ${pulumi.command} plugin install resource ${plugin.name} ${version}`,
      );
    }
  }
}

function firstLineOf(text: string): string {
  return text.split("\n").map((line) => line.trim()).find((line) => /error/i.test(line)) ?? text.split("\n")[0];
}

/**
 * A secret in state is encrypted with the stack's passphrase; the empty passphrase (the driver's default) makes it
 * decryptable by anyone who can read the backend. A job with secrets (presigned URLs, env values) needs a real one.
 */
export function refuseSecretsWithoutPassphrase(spec: JobSpec, backend: string): void {
  const problem = secretsPassphraseProblem(spec, backend);
  if (problem) throw new BadInputError(problem);
}

/** Why a run would be refused for its secrets (a dry run warns with it), or undefined. */
export function secretsPassphraseProblem(spec: JobSpec, backend: string): string | undefined {
  if (!/^(file|s3|gs|azblob):/.test(backend)) return undefined; // Pulumi Cloud encrypts secrets itself
  return emptyPassphraseProblem(spec, process.env);
}

/** The spec as the agent will read it (pointing at the content-addressed bundle); a missing bundle is bad input. */
export function stagedSpec(resolved: ResolvedJob): JobSpec {
  let bundle;
  try {
    bundle = readAgentBundle(resolved.agentBundlePath);
  } catch (err) {
    throw new BadInputError(errorMessage(err));
  }
  return withAgent(resolved.spec, bundle);
}
