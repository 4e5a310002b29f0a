// Replaced by scripts/build-agent.js (esbuild `define`); "dev" when run from source.
declare const __CLOUDCOMPUTE_AGENT_VERSION__: string | undefined;

export const AGENT_VERSION: string =
  typeof __CLOUDCOMPUTE_AGENT_VERSION__ === "string" ? __CLOUDCOMPUTE_AGENT_VERSION__ : "dev";
