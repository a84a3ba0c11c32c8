// Values read from a cluster, typed before they are used: zod schemas of what each field must be, and an error naming object, field and value.
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { isCidr, isDnsLabel, isDnsName, isEnvName, isIpAddress, isLabelKey, isLabelValue, lineProblem, showValue } from '../engine/values.ts';

export { showValue };

/** A value from the cluster that is not what its field must be: names the object, the field and the value, and what was expected. */
export class ClusterValueError extends Error {
  readonly object: string;
  readonly field: string;
  readonly value: unknown;
  constructor(object: string, field: string, value: unknown, expected: string, fix?: string) {
    const what = value === undefined ? `is missing (expected ${expected})` : `${showValue(value)} is not ${expected}`;
    super(`${object}: ${field}: ${what}${fix ? `; ${fix}` : ''}`);
    this.name = 'ClusterValueError';
    this.object = object;
    this.field = field;
    this.value = value;
  }
}

/** Text that fits on one line of a file: no line break, NUL or other control character (engine/values.ts lineProblem). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds
export const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
export const oneLine = z.string({ error: 'a string' }).refine((v) => lineProblem(v) === undefined, 'one line of text (no newline, NUL or control character)');

export const ipAddress = z.string({ error: 'an IP address' }).refine(isIpAddress, 'an IP address');

export const cidr = z.string({ error: 'a CIDR' }).refine(isCidr, 'a CIDR such as 10.96.0.0/12');

/** A DNS name (RFC 1123 labels, lower case), as Kubernetes validates host names. */
export const dnsName = z.string({ error: 'a DNS name' }).refine(isDnsName, 'a DNS name (lower case letters, digits, "-" and ".")');

/** A Kubernetes object name of one DNS label (namespaces, services). */
export const dnsLabel = z.string({ error: 'a DNS label' }).refine(isDnsLabel, 'a DNS label (at most 63 lower case letters, digits and "-")');

/** A port number, 1 to 65535. */
export const port = z.number({ error: 'a port number' }).int('a port number').min(1, 'a port number (1 to 65535)').max(65535, 'a port number (1 to 65535)');

/** A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters. */
export const labelKey = z.string({ error: 'a label key' }).refine(isLabelKey, 'a label key ([prefix/]name: letters, digits, "-", "_", "."; at most 63)');

/** A label value: empty, or at most 63 letters, digits, "-", "_" and "." beginning and ending with a letter or digit. */
export const labelValue = z.string({ error: 'a label value' }).refine(isLabelValue, 'a label value (at most 63 letters, digits, "-", "_", ".")');

/** An environment variable name, as cluster.env and the proxy metadata use them. */
export const envName = z.string().refine(isEnvName, 'an environment variable name (letters, digits, "_")');

/** host:port, the host a DNS name or an IP address ([v6] in brackets). */
export const hostPort = z.string({ error: 'host:port' }).refine((v) => {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(v) ?? /^([^:[\]]+):(\d{1,5})$/.exec(v);
  if (!m) return false;
  const [, host = '', p = ''] = m;
  const hostOk = v.startsWith('[') ? isIpAddress(host) && isIP(host) === 6 : isIP(host) === 4 || isDnsName(host);
  return hostOk && Number(p) >= 1 && Number(p) <= 65535;
}, 'host:port (a DNS name or an IP address, and a port)');

/** An Istio release version: 1.24.2, 1.25.0-beta.0. */
export const istioVersion = z
  .string({ error: 'a version' })
  .refine((v) => /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(v), 'an Istio version such as 1.24.2 (major.minor.patch)');

/** One or more PEM certificates, each one parsing as X.509. */
export const pemCertificates = z.string({ error: 'PEM' }).refine((v) => {
  const blocks = v.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0 || v.includes('\u0000')) return false;
  // only certificates and the whitespace between them
  if (v.replace(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g, '').trim() !== '') return false;
  try {
    for (const block of blocks) new X509Certificate(block);
    return true;
  } catch {
    return false;
  }
}, 'PEM certificates (-----BEGIN CERTIFICATE----- blocks that parse as X.509, nothing else)');

/**
 * Parses `input` with `schema`; the first problem becomes a ClusterValueError naming `object`, the field (the path in the
 * input, after `field`) and the value found there.
 */
export function parseClusterValue<T extends z.ZodType>(schema: T, input: unknown, object: string, field = ''): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  let value: unknown = input;
  for (const part of path) value = value && typeof value === 'object' ? (value as Record<string | number, unknown>)[part] : undefined;
  const part = (p: string | number) => (typeof p === 'number' ? `[${p}]` : CONTROL.test(p) || /[.=\s"]/.test(p) ? JSON.stringify(p) : p);
  const at = (parts: (string | number)[]) =>
    [field, ...parts.map(part)]
      .filter((p) => p !== '')
      .join('.')
      .replaceAll('.[', '[');
  // a key that is not a valid key: zod's path ends with the key; the field is the map, the value the key
  if (issue.code === 'invalid_key') {
    const keyIssue = (issue as { issues?: { message: string }[] }).issues?.[0];
    return fail(object, at(path.slice(0, -1)), path[path.length - 1], keyIssue?.message ?? 'a valid key');
  }
  const expected = issue.code === 'invalid_type' && value !== undefined ? `${issue.message.replace(/^Invalid input: /, '')}` : issue.message;
  return fail(object, at(path) || field, value, expected);
}

function fail(object: string, field: string, value: unknown, expected: string): never {
  throw new ClusterValueError(object, field, value, expected);
}

/** Every string under a value (a YAML tree), with its path: for refusing control characters wherever they hide. */
export function stringsIn(value: unknown, path: (string | number)[] = []): { path: (string | number)[]; value: string }[] {
  if (typeof value === 'string') return [{ path, value }];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringsIn(v, [...path, i]));
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => [{ path: [...path, k], value: k }, ...stringsIn(v, [...path, k])]);
  return [];
}

/** Refuses a tree from YAML with a string (a key too) that is not one line: what may go into a rendered file. */
export function refineOneLine(tree: unknown, ctx: z.RefinementCtx): void {
  for (const { path, value } of stringsIn(tree)) {
    if (lineProblem(value)) {
      ctx.addIssue({ code: 'custom', path, message: 'one line of text (no newline, NUL or control character)' });
      return;
    }
  }
}

/** An API server URL: https, a host that is a DNS name or an IP address, an optional port and path; no user, query or fragment. */
export const apiServerUrl = z.string({ error: 'an https:// URL' }).refine((v) => {
  if (lineProblem(v)) return false;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return false;
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return url.protocol === 'https:' && !url.username && !url.password && !url.search && !url.hash && (isIpAddress(host) || isDnsName(host));
}, 'an https:// URL of the API server (a DNS name or an IP address, and a port)');

/**
 * The Kubernetes access an operator stored (Vault KV) or gave (files), typed before it is used: the server URL, the CA
 * as PEM certificates, and a bearer token of one line (RFC 6750's token characters, which a JWT is made of). The token's
 * value is never shown, even when it is refused.
 */
export function checkKubernetesAccess(
  access: { server: string; caPem: string; token: string },
  object: string,
  fields: { server: string; ca: string; token: string },
): void {
  parseClusterValue(apiServerUrl, access.server, object, fields.server);
  parseClusterValue(pemCertificates, access.caPem, object, fields.ca);
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(access.token))
    throw new Error(`${object}: ${fields.token}: not a bearer token (one line of letters, digits and "-._~+/=", no spaces); its value is not shown`);
}
