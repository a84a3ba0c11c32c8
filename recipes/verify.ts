// meshvm verify: the mesh-expansion guide's verification steps, as checks over what a runlist declares and the machine has.
import { X509Certificate } from 'node:crypto';
import dns from 'node:dns';
import net from 'node:net';
import type { Declared } from '../engine/resource.ts';
import type { HostReader } from '../engine/host.ts';
import { formatMode } from '../engine/host.ts';
import { jwtClaims, TOKEN_PATH } from './certs.ts';

export interface Check {
  check: string;
  ok: boolean;
  detail: string;
  /** What to do about a failure. */
  fix?: string;
  skipped?: boolean;
}

export interface VerifyOptions {
  /** A DNS server to ask instead of the system resolver (getaddrinfo, /etc/hosts included): "IP" or "IP:PORT". */
  resolver?: string | undefined;
  /** Certificates and tokens must stay valid at least this long. */
  renewalWindowSeconds?: number;
  timeoutMs?: number;
}

const spec = (d: Declared) => d.spec as Record<string, unknown>;

export async function verifyMesh(declared: readonly Declared[], host: HostReader, options: VerifyOptions = {}): Promise<Check[]> {
  const live = host.root === '/';
  const lookup = resolverFor(options);
  const checks: Check[] = [];
  const files = declared.filter((d) => d.type.kind === 'file');
  const kubedns = files.find((d) => String(spec(d).path).startsWith('/etc/dnsmasq.d/') && /^server=\//m.test(String(spec(d).content ?? '')));

  // 1. names through the local resolver
  const answers = [...String(kubedns ? spec(kubedns).content : '').matchAll(/^address=\/([^/]+)\/(.+)$/gm)].map((m) => ({ name: m[1]!, ip: m[2]! }));
  for (const { name, ip } of answers) {
    const got = await lookup(name).catch((error: Error) => error);
    const ok = Array.isArray(got) && got.includes(ip);
    checks.push({
      check: 'dns', ok, detail: `${name} resolves to ${Array.isArray(got) ? got.join(', ') || 'nothing' : `an error (${got.message})`}${ok ? '' : `, not ${ip}`}`,
      ...(ok ? {} : { fix: 'is dnsmasq running with /etc/dnsmasq.d/kubedns, and does the resolver ask it? (systemctl status dnsmasq; meshvm converge)' }),
    });
  }
  const forward = /^server=\/([^/]+)\/(.+)$/m.exec(String(kubedns ? spec(kubedns).content : ''));
  if (forward) {
    const name = `kubernetes.default.${forward[1]}`;
    const got = await lookup(name).catch((error: Error) => error);
    const ok = Array.isArray(got) && got.length > 0;
    checks.push({ check: 'dns', ok, detail: `${name} (a cluster name) resolves to ${ok ? (got as string[]).join(', ') : 'nothing'}`, ...(ok ? {} : { fix: `can this VM reach the cluster DNS at ${forward[2]} (port 53, UDP and TCP)?` }) });
  }

  // 2. the control plane answers on its port
  const pilot = answers.find((a) => a.name.startsWith('istio-pilot.')) ?? answers.find((a) => a.name === 'istio-pilot');
  const istiod = answers.find((a) => a.name.startsWith('istiod.')) ?? answers.find((a) => a.name === 'istiod');
  const target = pilot ? { name: pilot.name, port: 15011 } : istiod ? { name: `${istiod.name.split('.').slice(0, 2).join('.')}.svc`, port: 15012, ip: istiod.ip } : undefined;
  if (target) {
    const ip = (await lookup(target.name).catch(() => []))[0] ?? ('ip' in target ? target.ip : undefined);
    const error = ip ? await tcpConnect(ip, target.port, options.timeoutMs ?? 3000) : 'the name does not resolve';
    checks.push({ check: 'control plane', ok: !error, detail: `${target.name}:${target.port}${ip ? ` (${ip})` : ''} ${error ? `does not accept a connection: ${error}` : 'accepts a connection'}`, ...(error ? { fix: 'open the port from this VM to the load balancer (security groups, firewall)' } : {}) });
  }

  // 3. certificates and the token: present, owned, moded, chained and not about to expire
  const window = (options.renewalWindowSeconds ?? 86_400) * 1000;
  const pemFiles = files.filter((d) => /\.pem$/.test(String(spec(d).path)) || spec(d).path === TOKEN_PATH);
  const root = pemFiles.find((d) => String(spec(d).path).endsWith('/root-cert.pem'));
  for (const file of pemFiles) {
    const s = spec(file);
    const p = String(s.path);
    const stat = await host.stat(p);
    if (!stat) {
      checks.push({ check: 'certs', ok: false, detail: `${p} is missing`, fix: 'meshvm converge' });
      continue;
    }
    const problems: string[] = [];
    if (s.owner && stat.owner !== s.owner) problems.push(`owned by ${stat.owner}, not ${String(s.owner)}`);
    if (typeof s.mode === 'number' && stat.mode !== s.mode) problems.push(`mode ${formatMode(stat.mode)}, not ${formatMode(s.mode)}`);
    const text = (await host.readFile(p)) ?? '';
    if (p === TOKEN_PATH) {
      // a short-lived token (12 h by default) is not held to the certificates' window: it is due when the converge would
      // mint a new one (what the certs recipe declared in this plan differs from the file), and wrong once expired
      const exp = jwtClaims(text.trim())?.exp;
      const expires = exp ? new Date(exp * 1000).toISOString() : '';
      if (!exp) problems.push('is not a token');
      else if (exp * 1000 <= Date.now()) problems.push(`expired ${expires}`);
      else if (typeof s.content === 'string' && s.content !== text) problems.push(`is due for renewal (expires ${expires})`);
    } else if (!p.endsWith('/key.pem')) {
      try {
        const cert = new X509Certificate(text);
        if (Date.parse(cert.validTo) < Date.now() + window) problems.push(`expires ${new Date(cert.validTo).toISOString()}`);
        if (p.endsWith('/cert-chain.pem') && root) {
          const rootText = (await host.readFile(String(spec(root).path))) ?? '';
          if (!cert.verify(new X509Certificate(rootText).publicKey)) problems.push('is not signed by root-cert.pem');
        }
      } catch (error) {
        problems.push(`is not a certificate (${(error as Error).message})`);
      }
    }
    checks.push({ check: 'certs', ok: problems.length === 0, detail: `${p} ${problems.length ? problems.join(', ') : 'is in place and valid'}`, ...(problems.length ? { fix: 'meshvm converge (it renews what the cluster has renewed)' } : {}) });
  }

  // 4. services active, 5. the sidecar's interception chains (a booted machine only)
  const services = declared.filter((d) => d.type.kind === 'service' && spec(d).running === true);
  for (const service of services) {
    const name = String(spec(service).name);
    if (!live) {
      checks.push({ check: 'services', ok: true, skipped: true, detail: `${name}: not checked under --root` });
      continue;
    }
    const state = (await host.query(['systemctl', 'is-active', name])).stdout.trim();
    checks.push({ check: 'services', ok: state === 'active', detail: `${name} is ${state || 'unknown'}`, ...(state === 'active' ? {} : { fix: `journalctl -u ${name}` }) });
  }
  if (services.some((s) => spec(s).name === 'istio.service')) {
    if (!live) checks.push({ check: 'interception', ok: true, skipped: true, detail: 'not checked under --root' });
    else {
      const nat = (await host.query(['iptables-save', '-t', 'nat'])).stdout;
      const missing = ['ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'].filter((chain) => !nat.includes(`:${chain} `));
      checks.push({ check: 'interception', ok: missing.length === 0, detail: missing.length ? `nat chains missing: ${missing.join(', ')}` : 'the ISTIO_INBOUND, ISTIO_OUTPUT and ISTIO_REDIRECT nat chains exist', ...(missing.length ? { fix: 'the istio service sets them up when it starts: systemctl restart istio' } : {}) });
    }
  }
  return checks;
}

function resolverFor(options: VerifyOptions): (name: string) => Promise<string[]> {
  if (!options.resolver) return async (name) => (await dns.promises.lookup(name, { all: true, family: 4 })).map((a) => a.address);
  const resolver = new dns.promises.Resolver({ timeout: options.timeoutMs ?? 3000, tries: 1 });
  resolver.setServers([options.resolver]);
  return (name) => resolver.resolve4(name);
}

function tcpConnect(ip: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: ip, port, timeout: timeoutMs });
    socket.once('connect', () => (socket.destroy(), resolve(undefined)));
    socket.once('timeout', () => (socket.destroy(), resolve(`no answer within ${timeoutMs} ms`)));
    socket.once('error', (error) => resolve(error.message));
  });
}
