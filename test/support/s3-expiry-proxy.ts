/**
 * moto serves presigned URLs without checking their expiry. This loopback proxy in front of it does what S3 does:
 * a request past `X-Amz-Date` + `X-Amz-Expires` gets HTTP 403 AccessDenied "Request has expired" (S3's error body);
 * anything else is forwarded to moto unchanged.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import * as os from "node:os";
import * as path from "node:path";
import { forwardRequest } from "./fault-proxy";

export interface ExpiryProxy {
  /** Rewrite a presigned URL made against moto to go through the proxy. */
  via(url: string): string;
  /** With `tls`: the proxy's self-signed certificate (PEM file), for NODE_EXTRA_CA_CERTS of whoever fetches. */
  caFile?: string;
  close(): Promise<void>;
}

/**
 * `tls: true` serves https with a fresh self-signed certificate for 127.0.0.1 (openssl), as real presigned URLs are:
 * the job spec accepts only https for them, so a driver-level test needs it.
 */
/**
 * `credentialsExpired: true`: every request gets S3's answer for a URL whose signing credentials (temporary ones, a
 * session) have died — whatever its X-Amz-Expires says, so the driver's check before launch lets it through.
 */
export async function startExpiryProxy(motoEndpoint: string, opts: { tls?: boolean; credentialsExpired?: boolean } = {}): Promise<ExpiryProxy> {
  const target = new URL(motoEndpoint);
  let caFile: string | undefined;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    if (opts.credentialsExpired) {
      res.writeHead(400, { "Content-Type": "application/xml" });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message><RequestId>PROXY</RequestId></Error>`);
      return;
    }
    const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(url.searchParams.get("X-Amz-Date") ?? "");
    const expires = Number(url.searchParams.get("X-Amz-Expires"));
    if (date && Number.isFinite(expires)) {
      const [, y, mo, d, h, mi, s] = date;
      const expiresAt = new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) + expires * 1000);
      if (expiresAt.getTime() < Date.now()) {
        res.writeHead(403, { "Content-Type": "application/xml" });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message>` +
            `<X-Amz-Expires>${expires}</X-Amz-Expires><Expires>${expiresAt.toISOString()}</Expires>` +
            `<ServerTime>${new Date().toISOString()}</ServerTime><RequestId>PROXY</RequestId></Error>`,
        );
        return;
      }
    }
    forwardRequest(target, req, res);
  };
  let server: Server;
  if (opts.tls) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-tls-"));
    caFile = path.join(dir, "cert.pem");
    const keyFile = path.join(dir, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", caFile], { stdio: "ignore" });
    server = createTlsServer({ key: fs.readFileSync(keyFile), cert: fs.readFileSync(caFile) }, handler) as unknown as Server;
  } else {
    server = createServer(handler);
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    caFile,
    via(url) {
      const u = new URL(url);
      u.protocol = opts.tls ? "https:" : "http:";
      u.host = `127.0.0.1:${port}`;
      return u.toString();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
