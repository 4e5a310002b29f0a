/** Error text shared by every part: what an unknown thrown value says. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
