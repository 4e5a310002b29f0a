/**
 * A loopback HTTP proxy in front of an S3-compatible server (moto) that injects faults on demand: answer 503 or 500
 * (with S3's error body), reset the connection, or answer slowly. Tests point a client's endpoint at it and switch the
 * mode mid-run, as a network blip, throttling or an overloaded endpoint would.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export type FaultMode = "pass" | "http-503" | "http-500" | "reset" | "slow";

export interface FaultProxy {
  endpoint: string;
  /** Switch the fault for requests whose path matches `only` (all requests by default). */
  set(mode: FaultMode, only?: RegExp): void;
  /** Requests that met a fault so far. */
  readonly faults: number;
  close(): Promise<void>;
}

const S3_ERROR = (code: string, message: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>FAULT</RequestId></Error>`;

/** Pass a request on to `target` unchanged and its answer back (shared by the test proxies). */
export function forwardRequest(target: URL, req: IncomingMessage, res: ServerResponse): void {
  const upstream = request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  upstream.on("error", () => res.destroy());
  req.pipe(upstream);
}

export async function startFaultProxy(upstreamEndpoint: string, opts: { slowMs?: number } = {}): Promise<FaultProxy> {
  const target = new URL(upstreamEndpoint);
  let mode: FaultMode = "pass";
  let only: RegExp | undefined;
  let faults = 0;
  const sockets = new Set<Socket>();
  const forward = (req: IncomingMessage, res: ServerResponse) => forwardRequest(target, req, res);
  const server: Server = createServer((req, res) => {
    if (mode === "pass" || (only && !only.test(req.url ?? ""))) return forward(req, res);
    faults++;
    switch (mode) {
      case "http-503":
        res.writeHead(503, { "Content-Type": "application/xml" });
        res.end(S3_ERROR("SlowDown", "Please reduce your request rate."));
        return;
      case "http-500":
        res.writeHead(500, { "Content-Type": "application/xml" });
        res.end(S3_ERROR("InternalError", "We encountered an internal error. Please try again."));
        return;
      case "reset":
        req.socket.destroy();
        return;
      case "slow":
        setTimeout(() => forward(req, res), opts.slowMs ?? 2000);
        return;
    }
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    set(next, filter) {
      mode = next;
      only = filter;
    },
    get faults() {
      return faults;
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
