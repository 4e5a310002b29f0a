/**
 * A local stand-in for NDA's package service, built from the shapes NDA's public client (nda-tools) relies on (see
 * ../shared/FIELD-NOTES.md): package info, the paged listing, the package metadata file (a presigned gzip CSV, built on
 * request), batched presigned URLs — and the "S3" side that serves the files behind those URLs with Range support,
 * refusing an Authorization header, a bad signature, and an expired URL (403 "Request has expired"). HTTPS with a
 * self-signed certificate made at start (openssl): presigned inputs must be https. Faults are switched per test.
 */
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { makeAbcdArchive } from "./abcd-data";

export interface FakeNdaFile {
  /** Decimal id; real ones exceed 2^31. */
  id: string;
  /** `fmriresults01/<name>` for associated files, a bare name for package files such as fmriresults01.txt. */
  alias: string;
  s3Url: string;
  bytes: Buffer;
  type?: string;
}

export interface FakeNdaPackage {
  id: string;
  name?: string;
  files: FakeNdaFile[];
  /** Its metadata file exists already; else it is built on request, ready after `metadataPollsNeeded` more polls. */
  metadataReady?: boolean;
}

export interface FakeNdaFaults {
  /** Ids the batch answer leaves out (with an `errors` entry), as often as `omitTimes` (default: always). */
  omitIds?: Set<string>;
  omitTimes?: number;
  /** The next N batch requests answer 503. */
  failBatches?: number;
  /** Each batch answer waits this long. */
  slowBatchMs?: number;
  /** Lifetime written into presigned URLs (X-Amz-Expires). */
  urlExpiresSeconds?: number;
  /** GETs of an unbuilt metadata file needed after its creation was requested. */
  metadataPollsNeeded?: number;
  /** The account is locked: every call answers 423. */
  locked?: boolean;
  /** A hostile or broken service: each presigned URL handed out is passed through this first. */
  rewriteUrl?: (url: string) => string;
  /** A hostile or broken metadata file: the S3 URL it writes for these file ids (the files themselves stay what they are). */
  metadataS3Url?: Record<string, string>;
  /** A broken service: every call answers 500 with a message echoing the request's Authorization header. */
  echoAuth?: boolean;
}

export interface FakeNda {
  /** The package service's base URL (…/api/package), for --nda-api. */
  apiUrl: string;
  /** The server's self-signed certificate (PEM file) for NODE_EXTRA_CA_CERTS. */
  caFile: string;
  ca: Buffer;
  faults: FakeNdaFaults;
  /** Every request: method, path (no query), and for batches the ids asked for. */
  requests: Array<{ method: string; path: string; ids?: string[]; auth?: string }>;
  /** Presigned URLs handed out, for tests that search for them. */
  issued: string[];
  /** Keys the "S3" side served bytes of (any status below 300). */
  served: string[];
  addPackage(pkg: FakeNdaPackage): void;
  close(): Promise<void>;
}

const S3_PREFIX = "/s3/";

export async function startFakeNda(opts: { username: string; password: string; packages?: FakeNdaPackage[]; faults?: FakeNdaFaults; pageSizeMax?: number }): Promise<FakeNda> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-fake-nda-"));
  const caFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", caFile], { stdio: "ignore" });
  const signingKey = randomBytes(32);
  const packages = new Map<string, FakeNdaPackage & { pollsLeft?: number; metadataId: string }>();
  /** What the "S3" side serves: the key under /s3/ → bytes. */
  const objects = new Map<string, Buffer>();
  const faults: FakeNdaFaults = opts.faults ?? {};
  const requests: FakeNda["requests"] = [];
  const issued: string[] = [];
  const served: string[] = [];
  const omitted = new Map<string, number>();
  let origin = "";

  const addPackage = (pkg: FakeNdaPackage) => {
    const metadataId = `${pkg.id}000000001`;
    packages.set(pkg.id, { ...pkg, metadataId });
    for (const file of pkg.files) objects.set(s3Key(file.s3Url), file.bytes);
  };
  for (const pkg of opts.packages ?? []) addPackage(pkg);

  const sign = (key: string, date: string, expires: number) => createHmac("sha256", signingKey).update(`${key}\n${date}\n${expires}`).digest("hex");
  const presign = (key: string): string => {
    const date = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const expires = faults.urlExpiresSeconds ?? 129599;
    const query = new URLSearchParams({
      "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
      "X-Amz-Credential": `ASIAFAKENDA/${date.slice(0, 8)}/us-east-1/s3/aws4_request`,
      "X-Amz-Date": date,
      "X-Amz-Expires": String(expires),
      "X-Amz-Security-Token": `FAKESESSIONTOKEN${randomBytes(12).toString("hex")}`,
      "X-Amz-SignedHeaders": "host",
      "X-Amz-Signature": sign(key, date, expires),
    });
    const signed = `${origin}${S3_PREFIX}${key.split("/").map(encodeURIComponent).join("/")}?${query}`;
    const url = faults.rewriteUrl ? faults.rewriteUrl(signed) : signed;
    issued.push(url);
    return url;
  };

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(typeof body === "string" ? body : JSON.stringify(body));
  };
  const s3Error = (res: ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { "Content-Type": "application/xml" });
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>FAKENDA</RequestId></Error>`);
  };

  const serveObject = (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const key = decodeURIComponent(url.pathname.slice(S3_PREFIX.length));
    const q = url.searchParams;
    if (req.headers.authorization) return s3Error(res, 400, "InvalidArgument", "Only one auth mechanism allowed");
    const date = q.get("X-Amz-Date") ?? "";
    const expires = Number(q.get("X-Amz-Expires"));
    if (q.get("X-Amz-Signature") !== sign(key, date, expires)) return s3Error(res, 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date)!;
    const expiresAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) + expires * 1000;
    if (Date.now() > expiresAt) return s3Error(res, 403, "AccessDenied", "Request has expired");
    const bytes = objects.get(key);
    if (!bytes) return s3Error(res, 404, "NoSuchKey", "The specified key does not exist.");
    served.push(key);
    const etag = `"${createHmac("md5", "etag").update(bytes).digest("hex")}"`;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range) {
      const start = Number(range[1]);
      if (start >= bytes.length) {
        res.writeHead(416, { "Content-Range": `bytes */${bytes.length}` });
        return res.end();
      }
      const end = Math.min(range[2] ? Number(range[2]) : bytes.length - 1, bytes.length - 1);
      res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${bytes.length}`, "Content-Length": end - start + 1, ETag: etag });
      return res.end(bytes.subarray(start, end + 1));
    }
    res.writeHead(200, { "Content-Length": bytes.length, ETag: etag });
    res.end(bytes);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, body: string) => {
    const url = new URL(req.url ?? "/", origin);
    if (url.pathname.startsWith(S3_PREFIX)) return serveObject(req, res, url);
    const entry: FakeNda["requests"][number] = { method: req.method ?? "GET", path: url.pathname, auth: req.headers.authorization };
    requests.push(entry);
    const expected = `Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString("base64")}`;
    if (req.headers.authorization !== expected) return json(res, 401, { error: "Unauthorized", message: "Bad credentials" });
    if (faults.locked) return json(res, 423, { message: "Account locked" });
    if (faults.echoAuth) return json(res, 500, { message: `Internal error handling request with Authorization: ${req.headers.authorization}` });
    const create = /^\/api\/packaging-ws\/([^/]+)\/create-package-metadata-file$/.exec(url.pathname);
    const api = /^\/api\/package\/([^/]+)(\/files(?:\/(package_file_metadata|batchGeneratePresignedUrls))?)?$/.exec(url.pathname);
    const pkg = packages.get((create ?? api)?.[1] ?? "");
    if (!pkg) return json(res, 404, { message: `Package not found` });
    if (create && req.method === "POST") {
      if (!pkg.metadataReady && pkg.pollsLeft === undefined) pkg.pollsLeft = faults.metadataPollsNeeded ?? 2;
      return json(res, 202, { message: "Package metadata file creation started" });
    }
    if (!api) return json(res, 404, { message: "Not found" });
    const [, , files, sub] = api;
    if (!files) return json(res, 200, `{"package_id":${pkg.id},"package_name":${JSON.stringify(pkg.name ?? `package ${pkg.id}`)},"status":"Ready","file_count":${pkg.files.length},"has_associated_files":true}`);
    if (!sub) {
      const page = Number(url.searchParams.get("page") ?? 1);
      const size = Math.min(Number(url.searchParams.get("size") ?? 1000), opts.pageSizeMax ?? 1000);
      const rows = pkg.files.slice((page - 1) * size, page * size);
      if (page > 1 && rows.length === 0) return json(res, 400, { error: "Bad Request", message: "Cannot navigate past last page" });
      // Ids as bare JSON numbers, as NDA writes them.
      return json(res, 200, `{"results":[${rows.map((f) => `{"package_file_id":${f.id},"download_alias":${JSON.stringify(f.alias)},"file_size":${f.bytes.length},"nda_file_type":${JSON.stringify(f.type ?? "Data")}}`).join(",")}],"_links":{}}`);
    }
    if (sub === "package_file_metadata") {
      if (!pkg.metadataReady) {
        if (pkg.pollsLeft !== undefined && pkg.pollsLeft-- <= 0) pkg.metadataReady = true;
        else return json(res, 404, { message: "Package metadata file not found" });
      }
      const quote = (v: string | number) => `"${String(v).replaceAll('"', '""')}"`;
      const csv = ["PACKAGE_FILE_ID", "NDA_S3_URL", "FILE_SIZE", "DOWNLOAD_ALIAS", "SHORT_NAME"].map(quote).join(",") + "\n" +
        pkg.files.map((f) => [f.id, faults.metadataS3Url?.[f.id] ?? f.s3Url, f.bytes.length, f.alias, path.basename(f.alias)].map(quote).join(",")).join("\n") + "\n";
      const key = `nda-package-metadata/${pkg.id}/package_file_metadata_${pkg.id}.csv.gz`;
      objects.set(key, gzipSync(csv));
      return json(res, 200, `{"package_file_id":${pkg.metadataId},"downloadURL":${JSON.stringify(presign(key))}}`);
    }
    // batchGeneratePresignedUrls
    if (req.method !== "POST") return json(res, 405, { message: "Method not allowed" });
    const ids = (body.match(/\d+/g) ?? []).map(String);
    entry.ids = ids;
    if (ids.length > 50) return json(res, 400, { message: "At most 50 ids per request" });
    if (faults.slowBatchMs) await new Promise((r) => setTimeout(r, faults.slowBatchMs));
    if (faults.failBatches && faults.failBatches > 0) {
      faults.failBatches--;
      return json(res, 503, { message: "Service Unavailable" });
    }
    const urls: string[] = [];
    const errors: unknown[] = [];
    for (const id of ids) {
      const file = pkg.files.find((f) => f.id === id);
      const times = omitted.get(id) ?? 0;
      if (!file || (faults.omitIds?.has(id) && times < (faults.omitTimes ?? Infinity))) {
        omitted.set(id, times + 1);
        errors.push({ package_file_id: id, message: file ? "Internal error generating URL" : "File not in package" });
        continue;
      }
      urls.push(`{"package_file_id":${id},"downloadURL":${JSON.stringify(presign(s3Key(file.s3Url)))}}`);
    }
    return json(res, 200, `{"presignedUrls":[${urls.join(",")}],"errors":${JSON.stringify(errors)}}`);
  };

  const server: Server = createServer({ key: fs.readFileSync(keyFile), cert: fs.readFileSync(caFile) }, (req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      handle(req, res, body).catch((err: Error) => json(res, 500, { message: err.message }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  origin = `https://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  return {
    apiUrl: `${origin}/api/package`,
    caFile,
    ca: fs.readFileSync(caFile),
    faults,
    requests,
    issued,
    served,
    addPackage,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}

/** `s3://Bucket/key` → `Bucket/key`, the fake S3 side's key. */
function s3Key(s3Url: string): string {
  return s3Url.replace(/^s3:\/\//i, "");
}

/**
 * A package like an ABCD one: its own `fmriresults01.txt` (the text given, e.g. test/fixtures/fmriresults01.txt) and
 * an MPROC-like archive for every S3 URL it lists, with file ids above 2^31.
 */
export async function makeAbcdPackage(id: string, manifestText: string, firstFileId = 3_000_000_001): Promise<FakeNdaPackage> {
  const urls = [...new Set([...manifestText.matchAll(/s3:\/\/[^"\t\r\n]+/g)].map((m) => m[0]))];
  let next = firstFileId;
  const files: FakeNdaFile[] = [{ id: String(next++), alias: "fmriresults01.txt", s3Url: `s3://nda-packages/${id}/fmriresults01.txt`, bytes: Buffer.from(manifestText), type: "Data" }];
  for (const url of urls) {
    const name = url.split("/").pop()!;
    const guid = /NDAR_?INV[A-Z0-9]{8}/i.exec(name)?.[0].replace("_", "") ?? "NDARINV00000000";
    files.push({ id: String(next++), alias: `fmriresults01/${name}`, s3Url: url, bytes: (await makeAbcdArchive(guid)).tgz, type: "Associated File" });
  }
  return { id, files, metadataReady: true };
}
