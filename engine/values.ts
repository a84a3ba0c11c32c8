// Typed values and render guards: what a value from outside must be (IP, CIDR, DNS name, label, env name) as plain predicates, and the refusal a renderer gives for what its format cannot carry.
import { isIP } from 'node:net';

// ---- what a value must be: one predicate each, shared by the attribute schemas (validate.ts), the cluster's values (clients/cluster-values.ts) and the kinds ----

/**
 * An IPv4 or IPv6 address; an IPv6 zone ("fe80::1%eth0", one of this machine's interfaces) only where `zone` allows it: an
 * operator's attribute may name one, a cluster's value never does.
 */
export function isIpAddress(value: string, zone: 'zone allowed' | 'no zone' = 'no zone'): boolean {
  return isIP(value) !== 0 && (zone === 'zone allowed' || !value.includes('%'));
}

/** A CIDR block: an address, "/", a prefix length its family allows (10.63.240.0/20, fd00::/108). */
export function isCidr(value: string): boolean {
  const [ip, prefix, ...rest] = value.split('/');
  const family = isIpAddress(ip ?? '') ? isIP(ip ?? '') : 0;
  return rest.length === 0 && family !== 0 && /^\d{1,3}$/.test(prefix ?? '') && Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * The patterns behind the predicates, for schemas that show them (a zod regex becomes the JSON Schema's "pattern", which
 * editors check as the file is typed).
 */
export const PATTERN = {
  /** RFC 1123 labels joined by "."; the length and all-digit rules are isDnsName's. */
  dnsName: /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/,
  /** Kubernetes' DNS-1123 subdomain (object names): labels of any length, 253 in all (isDnsSubdomain). */
  dnsSubdomain: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
  dnsLabel: /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/,
  labelValue: /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/,
  envName: /^[A-Za-z_][A-Za-z0-9_]*$/,
  /** Istio's cluster ID (--clusterID, global.multiCluster.clusterName), at most 253; '' where the chart leaves it empty. */
  clusterId: /^[A-Za-z0-9][-A-Za-z0-9_.]*$/,
  /** A SPIFFE trust domain as a mesh config gives it, at most 255; '' when it sets none. */
  trustDomain: /^[A-Za-z0-9._-]*$/,
} as const;
const ALL_DIGITS_LAST = /(^|\.)[0-9]+$/;

/** A DNS name of RFC 1123 labels, lower case, as Kubernetes validates host names; the last label not all digits (10.0.0.300 is a broken address, not a name). */
export function isDnsName(value: string): boolean {
  return PATTERN.dnsName.test(value) && !ALL_DIGITS_LAST.test(value);
}

/** A DNS-1123 subdomain (a Kubernetes object name): labels joined by ".", at most 253 in all; all-digit labels allowed. */
export function isDnsSubdomain(value: string): boolean {
  return value.length <= 253 && PATTERN.dnsSubdomain.test(value);
}

/** A DNS-1123 label (a namespace, a Service, a port name): at most 63 lower case letters, digits and "-". */
export function isDnsLabel(value: string): boolean {
  return PATTERN.dnsLabel.test(value);
}

/** A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 letters, digits, "-", "_", ".". */
export function isLabelKey(value: string): boolean {
  const slash = value.lastIndexOf('/');
  const prefix = slash < 0 ? undefined : value.slice(0, slash);
  const name = slash < 0 ? value : value.slice(slash + 1);
  return (prefix === undefined || isDnsSubdomain(prefix)) && name !== '' && name.length <= 63 && PATTERN.labelValue.test(name);
}

/** A label value: empty, or at most 63 letters, digits, "-", "_" and "." beginning and ending with a letter or digit. */
export function isLabelValue(value: string): boolean {
  return value.length <= 63 && PATTERN.labelValue.test(value);
}

/** An environment variable name as a shell and systemd take it: a letter or "_", then letters, digits and "_". */
export function isEnvName(value: string): boolean {
  return PATTERN.envName.test(value);
}

// ---- what a line of a text file cannot carry ----

/**
 * Why a value cannot be one line of a text file, or undefined: a line break of any kind (LF, CR, NEL, U+2028, U+2029), a
 * NUL or another control character (C0, DEL, C1; a tab where `allow` says so), or half a UTF-16 surrogate pair (written as
 * U+FFFD, so not what was given).
 */
export function lineProblem(value: string, allow?: 'tab'): string | undefined {
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (code === 0x09 && allow === 'tab') continue;
    if (code === 0x0a || code === 0x0d || code === 0x85 || code === 0x2028 || code === 0x2029) return 'a line break';
    if (code === 0) return 'a NUL';
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return `a control character (U+${code.toString(16).toUpperCase().padStart(4, '0')})`;
    if (code >= 0xd800 && code <= 0xdfff) return 'half a surrogate pair (not UTF-8)';
  }
  return undefined;
}

/** A value as an error shows it: JSON (so a newline reads \n), at most 80 characters. */
export function showValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** A value a renderer will not write: names the file (or object), the field and the value, and what the format cannot carry. */
export class RenderError extends Error {
  readonly object: string;
  readonly field: string;
  constructor(object: string, field: string, value: unknown, why: string) {
    // a field named by a key that has a line break (an env key from outside) is shown as JSON: the error stays one line
    super(`refusing to write ${showValue(value)} into ${object} (${lineProblem(field) ? JSON.stringify(field) : field}): ${why}`);
    this.name = 'RenderError';
    this.object = object;
    this.field = field;
  }
}

/**
 * Throws a RenderError unless `value` fits on one line and `more` (the format's own rule, saying "it ..." when it finds
 * something) finds nothing wrong with it; returns the value.
 */
export function guardLine(object: string, field: string, value: string, more?: (value: string) => string | undefined): string {
  const line = lineProblem(value);
  const problem = line ? `it has ${line}` : more?.(value);
  if (problem) throw new RenderError(object, field, value, problem);
  return value;
}

/** guardLine on every string of a tree (keys too), the field named by its path ("defaultConfig.proxyMetadata.KEY"). */
export function guardTree(object: string, tree: unknown, path = ''): void {
  // a key that cannot be shown as it is (a newline in it) is shown as JSON, so the error stays one line
  const shown = (key: string) => (lineProblem(key) ? JSON.stringify(key) : key);
  const at = (key: string | number) => (typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${shown(key)}` : shown(key));
  if (typeof tree === 'string') guardLine(object, path || 'the value', tree);
  else if (Array.isArray(tree)) for (const [i, item] of tree.entries()) guardTree(object, item, at(i));
  else if (tree && typeof tree === 'object')
    for (const [key, value] of Object.entries(tree)) {
      guardLine(object, at(key), key);
      guardTree(object, value, at(key));
    }
}
