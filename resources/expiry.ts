// When a certificate bundle or a token stops being good: the run's status shows it (metrics, the fleet view).
import { X509Certificate } from 'node:crypto';
import type { Expiry } from '../engine/resource.ts';

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The earliest end of validity of the certificates in a PEM text; undefined when it holds none (or one that does not parse). */
export function certificateExpiry(pem: string): Expiry | undefined {
  let earliest: number | undefined;
  for (const block of pem.match(CERTIFICATE) ?? []) {
    let end: number;
    try {
      end = Date.parse(new X509Certificate(block).validTo);
    } catch {
      return undefined;
    }
    if (earliest === undefined || end < earliest) earliest = end;
  }
  return earliest === undefined ? undefined : { what: 'certificate', at: new Date(earliest) };
}
