/** The version every spec, marker and pointer carries; its own module so zod-free readers (record-parsers.ts) can check it. */
export const API_VERSION = "cloudcompute/v1" as const;
