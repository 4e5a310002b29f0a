/**
 * Durations as every part reports them: seconds to one decimal, as the driver's summary prints them (`up 41.3s`) and
 * the agent's timings and messages give them.
 */
export function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}
