/**
 * The BIDS-derivatives `dataset_description.json` kept at an output prefix with layout bids. Fields as the BIDS
 * specification defines them (modality-agnostic files, dataset_description; GeneratedBy items: Name, Version,
 * Description, CodeURL, Container {Type, Tag, URI}). It describes the dataset, never one job: no subject, no job id.
 */
import type { ContainerRuntime } from "./spec";

/** The BIDS version the description claims (the specification's release whose fields it uses). */
export const BIDS_VERSION = "1.10.1";

export interface DatasetDescription {
  Name: string;
  BIDSVersion: string;
  DatasetType: "derivative";
  GeneratedBy: Array<{
    Name: string;
    Version?: string;
    Description?: string;
    Container?: { Type: string; Tag: string };
  }>;
}

export interface DescribedImage {
  runtime: ContainerRuntime;
  /** The image reference as the spec gives it. */
  reference: string;
  /** As pulled: `sha256:…` for docker/podman, `sif-sha256:…` for apptainer. */
  digest?: string;
}

/** `image@sha256:…`: the reference pinned to what ran (docker resolves `name:tag@digest` by the digest). */
export function pinnedReference(image: Pick<DescribedImage, "reference" | "digest">): string {
  return image.digest?.startsWith("sha256:") && !image.reference.includes("@") ? `${image.reference}@${image.digest}` : image.reference;
}

export function datasetDescription(image: DescribedImage, toolVersion: string): DatasetDescription {
  const ran = image.runtime === "none" ? "a command run as a process" : `the container image ${image.reference}${image.digest ? ` (${image.digest})` : ""}`;
  return {
    Name: image.runtime === "none" ? "cloudcompute outputs" : `cloudcompute: ${image.reference}`,
    BIDSVersion: BIDS_VERSION,
    DatasetType: "derivative",
    GeneratedBy: [
      {
        Name: "cloudcompute",
        Version: toolVersion,
        Description: `Outputs of ${ran}, one job per subject on its own machine.`,
        ...(image.runtime === "none" ? {} : { Container: { Type: image.runtime === "apptainer" ? "apptainer" : "docker", Tag: pinnedReference(image) } }),
      },
    ],
  };
}
