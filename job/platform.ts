/** Where a job's compute runs: an EC2 instance (`aws`) or an agent process on this machine (`local`). */
export const PLATFORM_NAMES = ["aws", "local"] as const;
export type PlatformName = (typeof PLATFORM_NAMES)[number];

export function isPlatformName(name: string): name is PlatformName {
  return (PLATFORM_NAMES as readonly string[]).includes(name);
}
