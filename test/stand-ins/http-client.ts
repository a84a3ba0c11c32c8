// Minimal HTTP/1.1 client for the stand-in self-tests (node:http / node:https, so a test CA can be passed).
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json<T = any>(): T;
}

export function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | object; ca?: string } = {}): Promise<Response> {
  const u = new URL(url);
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  const headers: Record<string, string> = { ...init.headers };
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  if (body !== undefined && typeof init.body === 'object') headers['content-type'] ??= 'application/json';
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(u, { method: init.method ?? 'GET', headers, agent: false, ...(init.ca === undefined ? {} : { ca: init.ca }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
