/**
 * Which machine image and root volume a job gets, decided from the instance type and the GPU request before any
 * resource is declared (a GPU job on a type without GPUs fails here, not after boot).
 */
import type { JobSpec } from "../job/spec";

export type Architecture = "x86_64" | "arm64";

/** Instance families (the part before the generation digit) that carry NVIDIA GPUs. */
const GPU_FAMILIES = new Set(["g", "gr", "p"]);

/** The Deep Learning Base AMI's snapshot is larger than Amazon Linux's; a smaller root volume fails to launch. */
export const GPU_AMI_MIN_ROOT_GIB = 75;

export function al2023Parameter(arch: Architecture): string {
  return `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${arch}`;
}

/** AWS Deep Learning Base AMI (AL2023) with the NVIDIA driver and container toolkit installed. */
export function gpuAmiParameter(arch: Architecture): string {
  return `/aws/service/deeplearning/ami/${arch}/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id`;
}

interface InstanceFamily {
  /** Letters before the generation: `m`, `c`, `g`, `hpc`, ... */
  letters: string;
  /** Attribute letters after the generation: `g` (Graviton), `d`, `n`, `i-flex`, ... */
  attributes: string;
}

function instanceFamily(instanceType: string): InstanceFamily {
  const match = /^([a-z]+)\d+([a-z0-9-]*)\./.exec(instanceType);
  if (!match) throw new Error(`instance type "${instanceType}" is not of the form family.size (e.g. m5.4xlarge)`);
  return { letters: match[1], attributes: match[2] };
}

/** Graviton types carry a `g` among the attributes after the generation digit: m7g, c6gn, t4g, x2gd, g5g, is4gen. */
export function instanceArchitecture(instanceType: string): Architecture {
  return instanceFamily(instanceType).attributes.includes("g") ? "arm64" : "x86_64";
}

export function instanceHasGpu(instanceType: string): boolean {
  return GPU_FAMILIES.has(instanceFamily(instanceType).letters);
}

export interface MachineImage {
  architecture: Architecture;
  /** An explicit AMI id, or else the SSM parameter to resolve in the program. */
  ami?: string;
  parameter?: string;
  rootVolumeGiB: number;
}

/** Throws (naming the fields) when the request cannot work on the chosen instance type. */
export function chooseMachineImage(spec: Pick<JobSpec, "instance" | "container">): MachineImage {
  const { instance, container } = spec;
  const architecture = instanceArchitecture(instance.type);
  if (container.gpus > 0 && !instanceHasGpu(instance.type)) {
    throw new Error(
      `container.gpus is ${container.gpus} but instance.type ${instance.type} has no GPU: choose a g* or p* type (e.g. g5.xlarge)`,
    );
  }
  if (instance.ami) return { architecture, ami: instance.ami, rootVolumeGiB: instance.rootVolumeGiB };
  if (instance.amiParameter) return { architecture, parameter: instance.amiParameter, rootVolumeGiB: instance.rootVolumeGiB };
  if (container.gpus > 0) {
    return {
      architecture,
      parameter: gpuAmiParameter(architecture),
      rootVolumeGiB: Math.max(instance.rootVolumeGiB, GPU_AMI_MIN_ROOT_GIB),
    };
  }
  return { architecture, parameter: al2023Parameter(architecture), rootVolumeGiB: instance.rootVolumeGiB };
}
