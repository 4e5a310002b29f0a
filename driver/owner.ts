/**
 * Who owns a running job: the driver process working on it, named by host (hostname, machine id, PID namespace), PID
 * and the PID's boot and start time. With a
 * shared backend, stacks of other machines' drivers are in the same list; a PID alone can be reused by another
 * process. So a job counts as abandoned only when its owner is on this host and provably gone (no such PID, or a
 * PID that started at another time), and only an owner proven alive is ever signalled.
 */
import * as fs from "node:fs";
import * as os from "node:os";

export interface Owner {
  /** This machine as `thisHost()` names it. */
  host: string;
  pid: number;
  /** `<boot id>:<start time in clock ticks since boot>` of the process (see processIdentity); "" where unknown. */
  pidStart: string;
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * This machine as owners name it: hostname, machine id and PID namespace. A hostname alone is shared by containers
 * with a fixed hostname, CI runners and recycled cloud VMs, and a PID means nothing across PID namespaces: a driver
 * elsewhere must never look like a dead one here.
 */
export function thisHost(): string {
  const machine = readTrimmed("/etc/machine-id") ?? readTrimmed("/var/lib/dbus/machine-id") ?? "";
  let pidNamespace = "";
  try {
    pidNamespace = fs.readlinkSync("/proc/self/ns/pid").replace(/\D/g, "");
  } catch {
    /* not Linux */
  }
  return [os.hostname(), machine.slice(0, 12), pidNamespace].filter(Boolean).join("/");
}

/** A live process's identity across reboots: the boot it started in and its start time, or undefined. */
export function processIdentity(pid: number): string | undefined {
  const started = processStartTime(pid);
  if (started === undefined) return undefined;
  const boot = (readTrimmed("/proc/sys/kernel/random/boot_id") ?? "").slice(0, 8);
  return boot ? `${boot}:${started}` : started;
}

/** The stack tags that carry the owner into the backend, where every machine sharing it can read them. */
export const OWNER_TAGS = { host: "cloudcompute:owner-host", pid: "cloudcompute:owner-pid", pidStart: "cloudcompute:owner-pid-start" } as const;

/** The start time of a live process, or undefined when there is none (zombies count as gone). */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // the command name may hold spaces
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

export function currentOwner(): Owner {
  return { host: thisHost(), pid: process.pid, pidStart: processIdentity(process.pid) ?? "" };
}

export type OwnerState =
  /** The owner process runs on this host: leave the job to it, or signal it. */
  | "alive"
  /** The owner was on this host and is gone (or its PID now belongs to another process): the job is abandoned. */
  | "dead"
  /** Owned by a driver on another host, or nothing says who owns it: nobody here can prove it abandoned. */
  | "unknown";

export function ownerState(owner: Partial<Owner> | undefined): OwnerState {
  if (!owner?.host || !owner.pid) return "unknown";
  if (owner.host !== thisHost()) return "unknown";
  const identity = processIdentity(owner.pid);
  if (identity === undefined) return "dead";
  // Without a recorded start time a live PID may be anybody's: not provably ours, not provably dead.
  if (!owner.pidStart) return "unknown";
  return identity === owner.pidStart ? "alive" : "dead";
}

export function ownerTags(owner: Owner): Record<string, string> {
  return { [OWNER_TAGS.host]: owner.host, [OWNER_TAGS.pid]: String(owner.pid), [OWNER_TAGS.pidStart]: owner.pidStart };
}

export function ownerFromTags(tags: Record<string, string | undefined>): Partial<Owner> | undefined {
  if (!tags[OWNER_TAGS.host]) return undefined;
  return { host: tags[OWNER_TAGS.host], pid: Number(tags[OWNER_TAGS.pid]), pidStart: tags[OWNER_TAGS.pidStart] ?? "" };
}

export function describeOwner(owner: Partial<Owner> | undefined): string {
  return owner?.host ? `driver pid ${owner.pid} on ${owner.host}` : "no recorded owner";
}
