import { jobLayout } from "../job/layout";
import { formatS3Url } from "../job/s3url";
import { redactSpec } from "../job/spec";
import { backendUrl } from "../common/paths";
import type { ResolvedJob } from "./options";
import { platformNamed } from "./platform";
import { stagedSpec } from "./preflight";

/** `--dry-run`: everything the job would be, nothing created. */
export function dryRun(resolved: ResolvedJob): Record<string, unknown> {
  const platform = platformNamed(resolved.platform);
  const spec = stagedSpec(resolved);
  const layout = jobLayout(spec);
  return {
    dryRun: true,
    stack: spec.jobId,
    project: "cloudcompute",
    backend: backendUrl(resolved.backend),
    platform: platform.name,
    spec: redactSpec(spec),
    specUrl: formatS3Url(layout.spec),
    resultsUrl: formatS3Url(layout.results),
    ...(layout.datasetDescription ? { datasetDescriptionUrl: formatS3Url(layout.datasetDescription) } : {}),
    markerUrl: formatS3Url(layout.marker),
    ...platform.render(spec, resolved.agentBundlePath),
  };
}
