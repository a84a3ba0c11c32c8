// Shared plumbing for the stand-ins (HTTP/1.1, RFC 9112): loopback listener, fault queue, call log.
import { createServer as createHttpServer, IncomingMessage, ServerResponse } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { testPki } from './tls.ts';

export const LOOPBACK = '127.0.0.1';

/** One request as seen by a stand-in. Secret-bearing headers are replaced by "(redacted)". */
export interface Call {
  method: string;
  /** Path without the query string, e.g. "/v1/secret/data/app". */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** Route53: the API action (e.g. "ChangeResourceRecordSets"); Kubernetes: "verb resource"; Vault: unset. */
  action?: string;
  /** HTTP status sent; 0 when the connection was reset by a fault. Set once the response is sent. */
  status?: number;
  /** Kind of the injected fault that answered this request, if any. */
  fault?: string;
  /** Refused by the stand-in's request limit (limits.ts: the real service's rate or concurrency limit), not served. */
  limited?: true;
  /** Date.now() when the request arrived. */
  at: number;
  /** The client's address:port (a kept-alive connection: one client's requests in a row, e.g. a retry after a refusal). */
  from?: string;
}

const SECRET_HEADERS = new Set(['authorization', 'x-vault-token', 'cookie', 'x-amz-security-token', 'proxy-authorization']);

export function recordCall(calls: Call[], req: IncomingMessage, res: ServerResponse, url: URL): Call {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined) continue;
    headers[k] = SECRET_HEADERS.has(k) ? '(redacted)' : Array.isArray(v) ? v.join(', ') : v;
  }
  const call: Call = { method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers, at: Date.now() };
  if (req.socket.remotePort !== undefined) call.from = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  calls.push(call);
  res.once('close', () => {
    call.status = res.headersSent && res.writableFinished ? res.statusCode : 0;
  });
  return call;
}

/** Calls that match every given field (path: exact string, "*"-glob or RegExp). */
export function callsMatching(calls: readonly Call[], m: { method?: string; path?: string | RegExp; action?: string }): Call[] {
  return calls.filter(
    (c) =>
      (m.method === undefined || c.method === m.method.toUpperCase()) &&
      (m.path === undefined || pathMatches(m.path, c.path)) &&
      (m.action === undefined || c.action === m.action),
  );
}

export function pathMatches(pattern: string | RegExp, path: string): boolean {
  if (typeof pattern !== 'string') return pattern.test(path);
  if (!pattern.includes('*')) return pattern === path;
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
  return re.test(path);
}

/** Where a fault applies and how many times (default once; Infinity = until cleared). */
export interface FaultScope {
  /** Request path (no query): exact, "*"-glob (matches across "/") or RegExp. Omitted = any path. */
  path?: string | RegExp;
  method?: string;
  /** Route53 action name / Kubernetes "verb resource" (e.g. "get configmaps"). */
  action?: string;
  times?: number;
}

/** Faults every stand-in understands; each stand-in adds its own kinds. */
export type CommonFault = { kind: 'latency'; ms: number } | { kind: 'reset' } | { kind: 'status'; status?: number };

interface Queued<F> {
  fault: F;
  scope: FaultScope;
  left: number;
}

/**
 * Runtime fault queue. A request consumes every matching `latency` fault (delays add up) and then
 * at most one other matching fault, in injection order.
 */
export class Faults<F extends { kind: string }> {
  #queue: Queued<F>[] = [];

  inject(fault: F & FaultScope): this {
    const { path, method, action, times, ...rest } = fault;
    const scope: FaultScope = {};
    if (path !== undefined) scope.path = path;
    if (method !== undefined) scope.method = method.toUpperCase();
    if (action !== undefined) scope.action = action;
    this.#queue.push({ fault: rest as unknown as F, scope, left: times ?? 1 });
    return this;
  }

  clear(): void {
    this.#queue = [];
  }

  /** Faults not yet used up. */
  get pending(): number {
    return this.#queue.reduce((n, q) => n + (q.left > 0 ? 1 : 0), 0);
  }

  /** Consumes the faults that apply to this request: summed latency and the first non-latency fault. */
  take(ctx: { method: string; path: string; action?: string }): { delayMs: number; fault?: F } {
    let delayMs = 0;
    let fault: F | undefined;
    for (const q of this.#queue) {
      if (q.left <= 0 || !matches(q.scope, ctx)) continue;
      if (q.fault.kind === 'latency') {
        delayMs += (q.fault as unknown as { ms: number }).ms;
        q.left--;
      } else if (fault === undefined) {
        fault = q.fault;
        q.left--;
      }
    }
    this.#queue = this.#queue.filter((q) => q.left > 0);
    return fault === undefined ? { delayMs } : { delayMs, fault };
  }
}

function matches(scope: FaultScope, ctx: { method: string; path: string; action?: string }): boolean {
  return (
    (scope.method === undefined || scope.method === ctx.method) &&
    (scope.path === undefined || pathMatches(scope.path, ctx.path)) &&
    (scope.action === undefined || scope.action === ctx.action)
  );
}

/** Destroys the connection abruptly (TCP RST when possible): the client sees ECONNRESET / "socket hang up". */
export function resetConnection(res: ServerResponse): void {
  const socket = res.socket as (Socket & { resetAndDestroy?: () => void }) | null;
  if (!socket) return;
  try {
    socket.resetAndDestroy?.();
  } catch {
    // TLS sockets may refuse a reset; a plain destroy still drops the connection.
  }
  socket.destroy();
}

export async function readBody(req: IncomingMessage, limit = 4 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export interface Listening {
  url: string;
  port: number;
  caPem?: string;
  /** Aborted on stop(): pending fault delays end early. */
  signal: AbortSignal;
  stop(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, signal: AbortSignal) => Promise<void>;

/**
 * Listens on 127.0.0.1 (ephemeral port unless given); HTTPS with the shared test CA when tls is true.
 * `extraMethods` are verbs Node's HTTP parser refuses (e.g. Vault's LIST): such a request is served from the
 * parser's error path, on a connection that is closed afterwards (the request must arrive in one packet).
 */
export async function listen(
  handler: Handler,
  opts: { tls?: boolean; port?: number; pki?: { certPem: string; keyPem: string; caPem: string }; extraMethods?: string[] },
): Promise<Listening> {
  const abort = new AbortController();
  const pki = opts.tls ? (opts.pki ?? (await testPki())) : undefined;
  const wrapped = (req: IncomingMessage, res: ServerResponse): void => {
    handler(req, res, abort.signal).catch((err: unknown) => {
      if (res.headersSent || res.destroyed) return;
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`stand-in failure: ${String(err)}`);
    });
  };
  const rawSockets = new Set<Socket>();
  const server: Server = pki ? createHttpsServer({ cert: pki.certPem, key: pki.keyPem }, wrapped) : createHttpServer(wrapped);
  server.on('clientError', (err: Error & { code?: string; rawPacket?: Buffer }, socket: Socket) => {
    const raw = err.rawPacket;
    const method = raw?.toString('latin1', 0, 32).split(' ')[0] ?? '';
    if (err.code === 'HPE_INVALID_METHOD' && raw && opts.extraMethods?.includes(method) && serveRaw(raw, socket, wrapped)) {
      rawSockets.add(socket);
      socket.once('close', () => rawSockets.delete(socket));
      return;
    }
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, LOOPBACK, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let stopped: Promise<void> | undefined;
  const listening: Listening = {
    url: `${pki ? 'https' : 'http'}://${LOOPBACK}:${port}`,
    port,
    signal: abort.signal,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        abort.abort();
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of rawSockets) s.destroy();
      });
      return stopped;
    },
  };
  if (pki) listening.caPem = pki.caPem;
  return listening;
}

/** Hands a request the HTTP parser refused (unknown verb) to the normal handler; false if it is not a whole request. */
function serveRaw(raw: Buffer, socket: Socket, handle: (req: IncomingMessage, res: ServerResponse) => void): boolean {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const [requestLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const [method, url, version] = requestLine.split(' ');
  if (!method || !url || !version?.startsWith('HTTP/1.')) return false;
  const req = new IncomingMessage(socket);
  req.method = method;
  req.url = url;
  req.httpVersion = version.slice(5);
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i <= 0) return false;
    const name = line.slice(0, i).trim();
    const value = line.slice(i + 1).trim();
    req.rawHeaders.push(name, value);
    req.headers[name.toLowerCase()] = value;
  }
  const body = raw.subarray(Buffer.byteLength(text.slice(0, end + 4), 'latin1'));
  if (body.length > 0) req.push(body);
  req.push(null);
  req.complete = true; // else destroying the consumed request counts as an abort and kills the socket
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  res.on('finish', () => socket.end());
  handle(req, res);
  return true;
}

/** Waits for the summed fault latency; returns false if the server stopped meanwhile. */
export async function delay(ms: number, signal: AbortSignal): Promise<boolean> {
  if (ms <= 0) return true;
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export function randomId(length: number, alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'): string {
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}
