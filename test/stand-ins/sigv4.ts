// AWS Signature Version 4 (header form), as specified in the AWS General Reference "Signature Version 4 signing process".
import { createHash, createHmac } from 'node:crypto';

export interface ParsedAuthorization {
  accessKeyId: string;
  /** YYYYMMDD from the credential scope. */
  date: string;
  region: string;
  service: string;
  /** Lower-case header names, in the order given. */
  signedHeaders: string[];
  signature: string;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([A-Za-z0-9]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, ?SignedHeaders=([a-z0-9;_-]+), ?Signature=([0-9a-f]{64})$/;
export const AMZ_DATE_RE = /^(\d{8})T\d{6}Z$/;

/** Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=<64 hex>`. */
export function parseAuthorization(header: string | undefined): ParsedAuthorization | undefined {
  const m = header === undefined ? null : AUTH_RE.exec(header.trim());
  if (!m) return undefined;
  return { accessKeyId: m[1]!, date: m[2]!, region: m[3]!, service: m[4]!, signedHeaders: m[5]!.split(';'), signature: m[6]! };
}

export interface CanonicalInput {
  method: string;
  /** Path and optional query, e.g. "/" or "/2013-04-01/hostedzone/Z1/rrset?name=a". */
  pathAndQuery: string;
  /** Header values by lower-case name (multiple values already joined with ","). */
  headers: Record<string, string>;
  signedHeaders: readonly string[];
  body: string | Buffer;
}

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
const uriEncode = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

export function canonicalRequest(input: CanonicalInput): string {
  const [rawPath = '/', rawQuery = ''] = input.pathAndQuery.split('?', 2);
  const path =
    rawPath
      .split('/')
      .map((seg) => uriEncode(decodeURIComponent(seg)))
      .join('/') || '/';
  const query = [...new URLSearchParams(rawQuery)]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([a, av], [b, bv]) => (a === b ? (av < bv ? -1 : 1) : a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const names = [...input.signedHeaders].map((h) => h.toLowerCase()).sort();
  const headers = names.map((h) => `${h}:${(input.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  return [input.method.toUpperCase(), path, query, headers, names.join(';'), sha256Hex(input.body)].join('\n');
}

/** Hex signature for a request, given the secret key, X-Amz-Date value and credential scope. */
export function signature(input: CanonicalInput & { secretAccessKey: string; amzDate: string; region: string; service: string }): string {
  const day = input.amzDate.slice(0, 8);
  const scope = `${day}/${input.region}/${input.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', input.amzDate, scope, sha256Hex(canonicalRequest(input))].join('\n');
  let key = hmac(`AWS4${input.secretAccessKey}`, day);
  for (const part of [input.region, input.service, 'aws4_request']) key = hmac(key, part);
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

export function amzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

/**
 * Signs a request the way the AWS SDKs do (all given headers plus host and x-amz-date are signed).
 * Returns the headers to send, including Authorization. Used by tests to build valid requests.
 */
export function signRequest(req: {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: string;
  region: string;
  service: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  date?: Date;
}): Record<string, string> {
  const url = new URL(req.url);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
  headers['host'] = url.host;
  headers['x-amz-date'] = amzDate(req.date ?? new Date());
  if (req.sessionToken !== undefined) headers['x-amz-security-token'] = req.sessionToken;
  const signedHeaders = Object.keys(headers).sort();
  const sig = signature({
    method: req.method,
    pathAndQuery: url.pathname + url.search,
    headers,
    signedHeaders,
    body: req.body ?? '',
    secretAccessKey: req.secretAccessKey,
    amzDate: headers['x-amz-date'],
    region: req.region,
    service: req.service,
  });
  const day = headers['x-amz-date'].slice(0, 8);
  headers['authorization'] =
    `AWS4-HMAC-SHA256 Credential=${req.accessKeyId}/${day}/${req.region}/${req.service}/aws4_request, SignedHeaders=${signedHeaders.join(';')}, Signature=${sig}`;
  return headers;
}
