/**
 * moto serves presigned URLs without checking their expiry. This loopback proxy in front of it does what S3 does:
 * a request past `X-Amz-Date` + `X-Amz-Expires` gets HTTP 403 AccessDenied "Request has expired" (S3's error body);
 * anything else is forwarded to moto unchanged.
 */
import { createServer, type Server } from "node:http";
import { forwardRequest } from "./fault-proxy";

export interface ExpiryProxy {
  /** Rewrite a presigned URL made against moto to go through the proxy. */
  via(url: string): string;
  close(): Promise<void>;
}

export async function startExpiryProxy(motoEndpoint: string): Promise<ExpiryProxy> {
  const target = new URL(motoEndpoint);
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://proxy");
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
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    via(url) {
      const u = new URL(url);
      u.host = `127.0.0.1:${port}`;
      return u.toString();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
