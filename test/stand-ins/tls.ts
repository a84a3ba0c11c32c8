// Test PKI for the stand-ins and the e2e lab (X.509 v3, RFC 5280) made with the openssl CLI: one CA, one server cert for 127.0.0.1 and any further IPs.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestPki {
  /** PEM of the self-signed CA that clients must trust. */
  caPem: string;
  /** Server certificate (SAN IP:127.0.0.1, the IPs asked for, DNS:localhost) signed by the CA, and its key. */
  certPem: string;
  keyPem: string;
}

let shared: Promise<TestPki> | undefined;

/** One CA + server cert per process (cheap to share); `fresh: true` makes a new pair, e.g. to test CA pinning. */
export function testPki(opts: { fresh?: boolean } = {}): Promise<TestPki> {
  if (opts.fresh) return makePki();
  shared ??= makePki();
  return shared;
}

/** A new CA and a server certificate for `ips` (and 127.0.0.1, localhost); its CN is the first of them. */
export async function makePki(ips: readonly string[] = []): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'meshvm-pki-'));
  const p = (name: string): string => join(dir, name);
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await run('openssl', [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      p('ca.key'),
      '-out',
      p('ca.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=meshvm stand-in test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await run('openssl', ['req', '-new', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', `/CN=${ips[0] ?? '127.0.0.1'}`]);
    await writeFile(
      p('ext.cnf'),
      [
        `subjectAltName=${[...new Set([...ips, '127.0.0.1'])].map((ip) => `IP:${ip}`).join(',')},DNS:localhost`,
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        '',
      ].join('\n'),
    );
    await run('openssl', [
      'x509',
      '-req',
      '-in',
      p('server.csr'),
      '-CA',
      p('ca.pem'),
      '-CAkey',
      p('ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-sha256',
      '-extfile',
      p('ext.cnf'),
      '-out',
      p('server.pem'),
    ]);
    const [caPem, certPem, keyPem] = await Promise.all(['ca.pem', 'server.pem', 'server.key'].map((f) => readFile(p(f), 'utf8')));
    return { caPem: caPem!, certPem: certPem!, keyPem: keyPem! };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
