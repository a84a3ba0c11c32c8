// Schema helpers shared by resources and recipes: zod issues rendered as "path: message", and common field types.
import { z } from 'zod';
import { guestPathProblem } from './paths.ts';
import { isCidr, isDnsName, isIpAddress, lineProblem, PATTERN, showValue } from './values.ts';

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out;
}

export function formatIssue(issue: z.core.$ZodIssue, prefix: readonly PropertyKey[] = []): string {
  const where = formatPath([...prefix, ...issue.path]);
  return where ? `${where}: ${issue.message}` : issue.message;
}

/** An absolute, normalised guest path. */
export const guestPath = z.string().superRefine((value, ctx) => {
  const problem = guestPathProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `path ${problem}` });
});

/** A permission mode 0 to 0o7777 (a number; in YAML write 0o644 or "0644"). */
export const fileMode = z
  .union([z.number(), z.string().regex(/^0?[0-7]{3,4}$|^0o[0-7]{3,4}$/, 'expected an octal mode such as "0644"')])
  .transform((v) => (typeof v === 'number' ? v : parseInt(v.replace(/^0o/, ''), 8)))
  .pipe(z.number().int().min(0, 'mode must be between 0000 and 07777').max(0o7777, 'mode must be between 0000 and 07777'));

/** A user or group name as useradd accepts it, or a numeric id. */
export const accountName = z
  .string()
  .regex(/^(?:[a-z_][a-z0-9_-]*\$?|\d+)$/, 'expected an account name (lower case letters, digits, "_" or "-") or a numeric id')
  .max(32);

export const port = z.number().int().min(1, 'port must be between 1 and 65535').max(65535, 'port must be between 1 and 65535');

/** An IPv4 or IPv6 address (an IPv6 zone, "fe80::1%eth0", allowed: an attribute may name this machine's interface). */
export const ipAddress = z.string().refine((v) => isIpAddress(v, 'zone allowed'), { message: 'expected an IP address' });

/** An IPv4 or IPv6 address without a zone: where a tool takes no "%interface" (dnsmasq's address= and listen-address=). */
export const zonelessIpAddress = z.string().refine(isIpAddress, { message: 'expected an IP address without a zone ("%interface")' });

/** A CIDR block such as 10.63.240.0/20. */
export const cidr = z.string().refine(isCidr, { message: 'expected a CIDR such as 10.63.240.0/20' });

/** A DNS name (RFC 1123 labels), as Kubernetes validates them; the last label not all digits (10.0.0.300 is a broken address). */
export const dnsName = z
  .string()
  .regex(PATTERN.dnsName, 'expected a DNS name of lower case letters, digits, "-" and "."')
  .refine(isDnsName, { message: 'expected a DNS name, not an address: its last label is not all digits' });

/** One line of text: what a line of a rendered file can carry (no line break, NUL or other control character). */
export const oneLine = z.string().superRefine((v, ctx) => {
  const problem = lineProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: `expected one line of text: ${showValue(v)} has ${problem}` });
});

/** An environment variable name (a letter or "_", then letters, digits and "_"). */
export const envName = z.string().regex(PATTERN.envName, 'expected an environment variable name (letters, digits and "_", not starting with a digit)');

/** A list with no value twice. */
export function unique<T extends z.ZodType>(item: T) {
  return z.array(item).superRefine((list, ctx) => {
    const seen = new Set<unknown>();
    for (const [i, value] of list.entries()) {
      if (seen.has(value)) ctx.addIssue({ code: 'custom', message: `${String(value)} is listed twice`, path: [i] });
      seen.add(value);
    }
  });
}
