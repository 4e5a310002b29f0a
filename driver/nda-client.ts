/**
 * A client of NDA's package service, the API NDA's own `downloadcmd` (nda-tools) uses: package info, the paged file
 * listing, the package metadata file (the only place the API gives S3 paths) and batched presigned URLs. HTTP Basic
 * auth on every call; 502/503/504 and network errors are retried with backoff. File ids exceed 2^31 (and are kept as
 * decimal strings, exact at any size). Credentials never appear in an error message.
 */
import * as https from "node:https";
import * as http from "node:http";
import { gunzipSync } from "node:zlib";
import { parse as parseCsv } from "csv-parse/sync";
import { setTimeout as sleep } from "node:timers/promises";
import { withRetries } from "../common/retry";
import { redactUrl, scrubSignatures } from "../job/spec";
import { BadInputError, InfraError } from "./errors";
import type { NdaCredentials } from "./nda-credentials";

export const DEFAULT_NDA_API = "https://nda.nih.gov/api/package";
/** nda-tools asks for presigned URLs 50 ids at a time. */
export const PRESIGN_BATCH = 50;
/** The most bytes one answer (or the metadata file, inflated) may hold: a longer text than this cannot be a string anyway. */
export const MAX_RESPONSE_BYTES = 512 * 1024 * 1024;

export interface NdaClientOptions {
  /** The package service, e.g. https://nda.nih.gov/api/package; metadata files are built by its sibling packaging-ws. */
  baseUrl: string;
  credentials: NdaCredentials;
  /** Extra CA certificates (PEM) to trust, for a test server; production uses the system's (and NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer;
  /** Polling for a metadata file NDA is building (nda-tools: every 15 s for 30 min). */
  pollMs?: number;
  pollTimeoutMs?: number;
  /** Attempts per call for transient failures. */
  attempts?: number;
  retryBaseMs?: number;
  /** The most bytes one answer may hold (default MAX_RESPONSE_BYTES): a service that never stops cannot exhaust memory. */
  maxResponseBytes?: number;
}

export interface PackageInfo {
  packageId: string;
  name?: string;
  status?: string;
  fileCount?: number;
}

/** One file of the paged listing. */
export interface PackageFile {
  fileId: string;
  /** Computed by NDA: `fmriresults01/<file>` for associated files, bare names for package files. */
  alias: string;
  size?: number;
  type?: string;
}

/** One row of the package metadata file. */
export interface PackageFileMetadata {
  fileId: string;
  s3Url: string;
  size?: number;
  alias: string;
  shortName?: string;
}

export class NdaApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "NdaApiError";
  }
}

interface Answer {
  status: number;
  body: Buffer;
}

/** `"package_file_id": 3000000001` → a string, before JSON.parse can round an id above 2^53. */
function parseIdsAsText(text: string): unknown {
  return JSON.parse(text.replace(/"(package_file_id|packageFileId|package_id|id)"\s*:\s*(-?\d+)/g, '"$1":"$2"'));
}

export class NdaClient {
  private readonly base: string;
  private readonly packaging: string;

  constructor(private readonly options: NdaClientOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch {
      throw new BadInputError(`--nda-api ${options.baseUrl}: not a URL (expected e.g. ${DEFAULT_NDA_API})`);
    }
    // Basic auth sends the password with every call: never over plain http.
    if (url.username || url.password) throw new BadInputError(`--nda-api: give no user name or password in the URL (it would be shown in messages); use NDA_USERNAME/NDA_PASSWORD or --nda-credentials`);
    if (url.protocol !== "https:") throw new BadInputError(`--nda-api ${options.baseUrl}: must be https:// (your NDA password goes with every request)`);
    this.base = url.href.replace(/\/+$/, "");
    this.packaging = new URL("../packaging-ws", `${this.base}/`).href.replace(/\/+$/, "");
  }

  private request(method: string, url: string, opts: { body?: string; auth?: boolean } = {}): Promise<Answer> {
    const { credentials, ca } = this.options;
    const headers: Record<string, string> = { Accept: "application/json" };
    if (opts.auth !== false) headers.Authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const target = new URL(url);
    const send = target.protocol === "https:" ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const limit = this.options.maxResponseBytes ?? MAX_RESPONSE_BYTES;
      const req = send(target, { method, headers, ...(ca ? { ca } : {}), timeout: 120_000 }, (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          if (bytes > limit) return;
          bytes += c.length;
          if (bytes <= limit) return void chunks.push(c);
          chunks.length = 0;
          reject(new Error(`the answer holds more than ${limit} bytes`));
          req.destroy();
        });
        res.on("end", () => (bytes > limit ? undefined : resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) })));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(Object.assign(new Error("NDA did not answer in 120 s"), { code: "ETIMEDOUT" })));
      req.on("error", reject);
      req.end(opts.body);
    });
  }

  /** A call with retries for 502/503/504 and network errors; other failures become NdaApiErrors naming what was asked. */
  private async call(method: string, url: string, what: string, body?: string): Promise<Answer> {
    const answer = await withRetries(
      async () => {
        const res = await this.request(method, url, { body });
        if ([502, 503, 504].includes(res.status)) throw Object.assign(new Error(`HTTP ${res.status}`), { status: res.status });
        return res;
      },
      { attempts: this.options.attempts ?? 5, baseDelayMs: this.options.retryBaseMs ?? 500, isRetryable: (err) => [502, 503, 504].includes((err as { status?: number }).status ?? 0) || isNetworkError(err) },
    ).catch((err: Error & { status?: number }) => {
      throw new NdaApiError(`NDA ${what}: ${err.status ? `HTTP ${err.status} after retries` : err.message} (${this.base})`, err.status);
    });
    if (answer.status === 401) throw new NdaApiError(`NDA refused your credentials (HTTP 401) for ${what}: check NDA_USERNAME/NDA_PASSWORD or --nda-credentials`, 401);
    if (answer.status === 423) throw new NdaApiError(`your NDA account is locked (HTTP 423): unlock it at nda.nih.gov, then try again`, 423);
    if (answer.status === 403) throw new NdaApiError(`NDA denied access (HTTP 403) to ${what}: is the package yours, and is your data access request current?`, 403);
    return answer;
  }

  private json(answer: Answer): unknown {
    try {
      return parseIdsAsText(answer.body.toString("utf8"));
    } catch {
      return undefined;
    }
  }

  private failure(answer: Answer, what: string): NdaApiError {
    const body = this.json(answer) as { message?: string; error?: string; errorMessage?: string } | undefined;
    const detail = this.scrub(String(body?.message ?? body?.error ?? body?.errorMessage ?? answer.body.toString("utf8")).slice(0, 300));
    return new NdaApiError(`NDA ${what}: HTTP ${answer.status}${detail ? ` ${detail}` : ""}`, answer.status);
  }

  /** Text from the service, without what it may echo of the request: the password (plain or Basic), URL signatures. */
  private scrub(text: string): string {
    const { username, password } = this.options.credentials;
    const basic = Buffer.from(`${username}:${password}`).toString("base64");
    return scrubSignatures(text.split(basic).join("<redacted>").split(password).join("<redacted>")).replace(/(Basic|Bearer)\s+[A-Za-z0-9+/=._-]+/gi, "$1 <redacted>");
  }

  /** A URL NDA handed out, for a download without credentials: https, and no user info (which would be shown and sent). */
  private usable(url: unknown, what: string): string {
    let parsed: URL | undefined;
    try {
      parsed = new URL(String(url));
    } catch {
      parsed = undefined;
    }
    if (!parsed || parsed.protocol !== "https:" || parsed.username || parsed.password) {
      throw new NdaApiError(`NDA ${what}: the answer holds not a usable presigned URL (https:// without user info expected${parsed ? `, got ${parsed.protocol}//${parsed.username || parsed.password ? "<user info>@" : ""}${parsed.host}` : ""})`);
    }
    return String(url);
  }

  async packageInfo(packageId: string): Promise<PackageInfo> {
    const what = `package ${packageId}`;
    const answer = await this.call("GET", `${this.base}/${encodeURIComponent(packageId)}`, what);
    if (answer.status === 404) throw new NdaApiError(`NDA has no package ${packageId} for this account (HTTP 404): check the id on nda.nih.gov under "Data Packages"`, 404);
    if (answer.status !== 200) throw this.failure(answer, what);
    const info = this.json(answer) as Record<string, unknown> | undefined;
    if (!info || typeof info !== "object") throw new NdaApiError(`NDA ${what}: the answer is not JSON`);
    return {
      packageId: String(info.package_id ?? packageId),
      name: info.package_name === undefined ? undefined : String(info.package_name),
      status: info.status === undefined ? undefined : String(info.status),
      fileCount: typeof info.file_count === "number" ? info.file_count : undefined,
    };
  }

  /** Every file of the package, page by page, until a short page or NDA's "Cannot navigate past last page". */
  async listFiles(packageId: string, pageSize = 1000): Promise<PackageFile[]> {
    const files: PackageFile[] = [];
    for (let page = 1; ; page++) {
      const what = `file listing of package ${packageId} (page ${page})`;
      const answer = await this.call("GET", `${this.base}/${encodeURIComponent(packageId)}/files?page=${page}&size=${pageSize}`, what);
      if (answer.status !== 200) {
        if (/Cannot navigate past last page/i.test(answer.body.toString("utf8"))) return files;
        if (answer.status === 404 && page === 1) throw new NdaApiError(`NDA has no package ${packageId} for this account (HTTP 404)`, 404);
        throw this.failure(answer, what);
      }
      const results = (this.json(answer) as { results?: Array<Record<string, unknown>> } | undefined)?.results ?? [];
      for (const row of results) {
        files.push({
          fileId: String(row.package_file_id),
          alias: String(row.download_alias ?? ""),
          size: typeof row.file_size === "number" ? row.file_size : undefined,
          type: row.nda_file_type === undefined ? undefined : String(row.nda_file_type),
        });
      }
      if (results.length < pageSize) return files;
    }
  }

  /**
   * The package metadata file: file id → S3 URL. When NDA has not built it yet, ask for it and poll until it exists.
   */
  async metadata(packageId: string): Promise<PackageFileMetadata[]> {
    const url = `${this.base}/${encodeURIComponent(packageId)}/files/package_file_metadata`;
    const what = `metadata file of package ${packageId}`;
    const pollMs = this.options.pollMs ?? 15_000;
    const deadline = Date.now() + (this.options.pollTimeoutMs ?? 30 * 60_000);
    let requested = false;
    for (;;) {
      const answer = await this.call("GET", url, what);
      if (answer.status === 200) {
        const body = this.json(answer) as { downloadURL?: string } | undefined;
        if (!body?.downloadURL) throw new NdaApiError(`NDA ${what}: the answer has no downloadURL`);
        return parseMetadataCsv(await this.download(this.usable(body.downloadURL, what), what), what, this.options.maxResponseBytes);
      }
      if (answer.status !== 404) throw this.failure(answer, what);
      if (!requested) {
        const created = await this.call("POST", `${this.packaging}/${encodeURIComponent(packageId)}/create-package-metadata-file`, `creation of the ${what}`);
        if (created.status === 404) throw new NdaApiError(`NDA has no package ${packageId} for this account (HTTP 404)`, 404);
        if (created.status >= 300) throw this.failure(created, `creation of the ${what}`);
        requested = true;
      }
      if (Date.now() > deadline) throw new NdaApiError(`NDA ${what}: still not built after ${Math.round((this.options.pollTimeoutMs ?? 30 * 60_000) / 1000)} s; try again later`);
      await sleep(pollMs);
    }
  }

  /**
   * Presigned URLs for exactly these ids, 50 per request. NDA may leave ids out of an answer (its `errors` say why):
   * those are asked for once more, and any still missing is an error naming them.
   */
  async presign(packageId: string, fileIds: string[]): Promise<Map<string, string>> {
    const urls = new Map<string, string>();
    const wanted = [...new Set(fileIds)];
    for (let round = 1; round <= 2; round++) {
      const missing = wanted.filter((id) => !urls.has(id));
      const errors: string[] = [];
      for (let i = 0; i < missing.length; i += PRESIGN_BATCH) {
        const batch = missing.slice(i, i + PRESIGN_BATCH);
        if (!batch.every((id) => /^\d+$/.test(id))) throw new NdaApiError(`NDA file ids must be whole numbers: ${batch.join(", ")}`);
        const what = `presigned URLs for ${batch.length} file(s) of package ${packageId}`;
        const answer = await this.call("POST", `${this.base}/${encodeURIComponent(packageId)}/files/batchGeneratePresignedUrls`, what, `[${batch.join(",")}]`);
        if (answer.status !== 200) throw this.failure(answer, what);
        const body = this.json(answer) as { presignedUrls?: Array<{ package_file_id: string; downloadURL: string }>; errors?: unknown[] } | undefined;
        for (const entry of body?.presignedUrls ?? []) if (batch.includes(String(entry.package_file_id)) && entry.downloadURL) urls.set(String(entry.package_file_id), this.usable(entry.downloadURL, what));
        for (const error of body?.errors ?? []) errors.push(this.scrub(typeof error === "string" ? error : JSON.stringify(error)));
      }
      const still = wanted.filter((id) => !urls.has(id));
      if (still.length === 0) return urls;
      if (round === 2) {
        throw new NdaApiError(`NDA gave no presigned URL for file id(s) ${still.join(", ")} of package ${packageId}${errors.length ? ` (its errors: ${errors.join("; ").slice(0, 500)})` : ""}`);
      }
    }
    return urls;
  }

  /** The bytes behind a presigned URL: no Authorization header (S3 refuses two auth mechanisms). */
  async download(url: string, what: string): Promise<Buffer> {
    const answer = await withRetries(
      async () => {
        const res = await this.request("GET", url, { auth: false });
        if (res.status >= 500) throw Object.assign(new Error(`HTTP ${res.status}`), { status: res.status });
        return res;
      },
      { attempts: this.options.attempts ?? 5, baseDelayMs: this.options.retryBaseMs ?? 500 },
    ).catch((err: Error) => {
      throw new NdaApiError(`NDA ${what}: ${redactUrl(url)} could not be read: ${err.message}`);
    });
    if (answer.status !== 200) throw new NdaApiError(`NDA ${what}: ${redactUrl(url)} answered HTTP ${answer.status}${/Request has expired/.test(answer.body.toString()) ? " (the URL expired)" : ""}`, answer.status);
    return answer.body;
  }
}

function isNetworkError(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? "";
  return /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|EHOSTUNREACH|ENETUNREACH)$/.test(code) || /socket hang up/i.test(String((err as Error).message));
}

/** The metadata file: a gzip CSV, every field quoted, header PACKAGE_FILE_ID,NDA_S3_URL,FILE_SIZE,DOWNLOAD_ALIAS,SHORT_NAME. */
export function parseMetadataCsv(gzipped: Buffer, what = "metadata file", maxBytes = MAX_RESPONSE_BYTES): PackageFileMetadata[] {
  let text: string;
  try {
    text = (gzipped[0] === 0x1f && gzipped[1] === 0x8b ? gunzipSync(gzipped, { maxOutputLength: maxBytes }) : gzipped).toString("utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") throw new NdaApiError(`NDA ${what}: larger than ${maxBytes} bytes once inflated`);
    throw new NdaApiError(`NDA ${what}: not a gzip file (${(err as Error).message})`);
  }
  let rows: Array<Record<string, string>>;
  try {
    rows = parseCsv(text, { columns: (header: string[]) => header.map((h) => h.trim().toUpperCase()), skip_empty_lines: true, bom: true });
  } catch (err) {
    throw new NdaApiError(`NDA ${what}: not a readable CSV (${(err as Error).message.slice(0, 200)})`);
  }
  if (rows.length > 0 && (!("PACKAGE_FILE_ID" in rows[0]) || !("NDA_S3_URL" in rows[0]))) {
    throw new NdaApiError(`NDA ${what}: expected columns PACKAGE_FILE_ID and NDA_S3_URL, got ${Object.keys(rows[0]).join(", ")}`);
  }
  return rows.map((row) => ({
    fileId: row.PACKAGE_FILE_ID.trim(),
    s3Url: row.NDA_S3_URL.trim(),
    size: row.FILE_SIZE ? Number(row.FILE_SIZE) : undefined,
    alias: (row.DOWNLOAD_ALIAS ?? "").trim(),
    shortName: row.SHORT_NAME?.trim() || undefined,
  }));
}

/** Make NdaApiErrors the driver's errors: the user's side (credentials, package id) is bad input, the rest infra. */
export function asDriverError(err: unknown): Error {
  if (!(err instanceof NdaApiError)) return err as Error;
  const status = err.status ?? 0;
  return status === 401 || status === 403 || status === 404 || status === 423 || (status >= 400 && status < 500) ? new BadInputError(err.message) : new InfraError(err.message);
}

