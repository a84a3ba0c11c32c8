// The istiod flow's checks, as Istio's VM guide checks a VM: istiod reachable as the sidecar reaches it (as istio-proxy, past
// its own redirect), the east-west gateway's ports on a multi-network mesh, the certificate chain the agent wrote.
import { X509Certificate } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { Check, CheckContext } from '../../engine/check.ts';
import type { HostReader } from '../../engine/host.ts';
import { probeConnect, proxyAccount, type ProbeAccount } from './probe.ts';

export const CLUSTER_ENV = '/var/lib/istio/envoy/cluster.env';
export const SIDECAR_ENV = '/var/lib/istio/envoy/sidecar.env';
/** Where istio-start.sh has the agent write its certificates unless OUTPUT_CERTS says otherwise. */
export const DEFAULT_OUTPUT_CERTS = '/etc/certs';
/** The east-west gateway's ports: istiod (15012) and cross-network mTLS (15443, AUTO_PASSTHROUGH). */
export const EASTWEST_PORTS = [15012, 15443] as const;
/** The agent renews a workload certificate at half its lifetime; with less than this share left, renewal is failing. */
export const RENEWAL_OVERDUE_SHARE = 0.25;

export interface IstiodCheckOptions {
  /** The account the sidecar runs as (certs' proxyUser). */
  proxyUser: string;
  systemNamespace: string;
  /** The mesh config as declared (used when the machine's cannot be read). */
  meshConfig: string | undefined;
  /** The workload, from the declared istio-token, when the mesh config does not say. */
  workload?: { namespace: string; serviceAccount: string } | undefined;
}

/** KEY=value lines of an env file as the shell reads them (quotes removed; no expansion). */
export function parseEnvFile(content: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of content.split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$/.exec(line);
    if (!m) continue;
    let value = m[2]!;
    if (/^'.*'$|^".*"$/.test(value)) value = value.slice(1, -1);
    out[m[1]!] = value;
  }
  return out;
}

/** The sidecar's environment as istio-start.sh builds it: sidecar.env, then cluster.env over it. */
export async function sidecarEnvironment(host: HostReader): Promise<Record<string, string>> {
  return { ...parseEnvFile((await host.readFile(SIDECAR_ENV)) ?? ''), ...parseEnvFile((await host.readFile(CLUSTER_ENV)) ?? '') };
}

interface MeshConfig {
  discoveryAddress?: string;
  proxyMetadata: Record<string, string>;
}

/** defaultConfig.discoveryAddress and proxyMetadata of /etc/istio/config/mesh; undefined when it is not YAML. */
export function parseMeshConfig(content: string): MeshConfig | undefined {
  try {
    const doc = parseYaml(content) as { defaultConfig?: { discoveryAddress?: unknown; proxyMetadata?: Record<string, unknown> } } | null;
    const config = doc?.defaultConfig;
    const metadata = Object.fromEntries(Object.entries(config?.proxyMetadata ?? {}).map(([k, v]) => [k, String(v)]));
    return { ...(typeof config?.discoveryAddress === 'string' ? { discoveryAddress: config.discoveryAddress } : {}), proxyMetadata: metadata };
  } catch {
    return undefined;
  }
}

/** "host:port" (or "[v6]:port") into its parts. */
export function splitAddress(address: string, defaultPort: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(address) ?? /^([^:]+)(?::(\d+))?$/.exec(address);
  return m ? { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort } : { host: address, port: defaultPort };
}

export async function istiodChecks(o: IstiodCheckOptions, context: CheckContext): Promise<Check[]> {
  const { host } = context;
  if (!host.live) {
    return [
      {
        check: 'control plane',
        ok: true,
        skipped: true,
        detail: `istiod, the east-west gateway and the agent's certificates: not checked under --root ${host.root} (they are the running system's)`,
      },
    ];
  }
  const mesh = parseMeshConfig((await host.readFile('/etc/istio/config/mesh')) ?? o.meshConfig ?? '') ?? { proxyMetadata: {} };
  const env = await sidecarEnvironment(host);
  const checks: Check[] = [];

  // 1. istiod as the sidecar dials it: discoveryAddress (and CA_ADDR when it differs), as istio-proxy
  const account = await proxyAccount(host, o.proxyUser);
  const discovery = mesh.discoveryAddress ?? `istiod.${o.systemNamespace}.svc:15012`;
  const targets = [...new Set([discovery, ...(env.CA_ADDR ? [env.CA_ADDR] : [])])];
  let gateway: string | undefined;
  for (const target of targets) {
    const { host: name, port } = splitAddress(target, 15012);
    const check = await controlPlaneCheck(context, name, port, account, o.proxyUser);
    gateway ??= check.address;
    checks.push(check.check);
  }

  // 2. the agent's certificate chain
  checks.push(await agentChainCheck(host, env, mesh, o));

  // 3. multi-network: the east-west gateway (where istiod's name leads) takes 15012 and 15443
  const network = env.ISTIO_META_NETWORK || mesh.proxyMetadata.ISTIO_META_NETWORK;
  if (network && account) checks.push(await eastWestCheck(context, gateway ?? splitAddress(discovery, 15012).host, network, account));
  return checks;
}

async function controlPlaneCheck(
  context: CheckContext,
  name: string,
  port: number,
  account: ProbeAccount | undefined,
  proxyUser: string,
): Promise<{ check: Check; address?: string | undefined }> {
  const where = `${name}:${port}`;
  if (!account) {
    return {
      check: {
        check: 'control plane',
        ok: false,
        detail: `${where} cannot be tried as the sidecar: no account ${proxyUser} on this machine`,
        fix: 'the istio-sidecar package (or the istio-proxy-user recipe) creates it: meshvm converge',
      },
    };
  }
  const got = await probeConnect(context.host, name, port, { as: account, timeoutMs: context.timeoutMs });
  const who = `as ${account.name} (uid ${account.uid}, which the sidecar's redirect lets through)`;
  if (!got.error) {
    return { address: got.address, check: { check: 'control plane', ok: true, detail: `${where} (${got.address}) accepts a connection ${who}` } };
  }
  if (!got.address) {
    const unresolved = got.error.endsWith('does not resolve');
    return {
      check: {
        check: 'control plane',
        ok: false,
        detail: `${where} cannot be tried as ${account.name}: ${got.error}`,
        fix: unresolved
          ? `the sidecar finds istiod through /etc/hosts (the certs recipe's istiod line, kept at the east-west gateway's address): meshvm converge, then getent hosts ${name}`
          : 'meshvm verify runs this probe as the sidecar (setpriv, bash, timeout): run it as root',
      },
    };
  }
  return {
    address: got.address,
    check: {
      check: 'control plane',
      ok: false,
      detail: `${where} (${got.address}) does not accept a connection ${who}: ${got.error}`,
      fix: `the name resolves, the port does not answer: open port ${port} from this VM to ${got.address} (security groups, firewall), and check that the east-west gateway exposes istiod (its Gateway and VirtualService for ${port})`,
    },
  };
}

async function eastWestCheck(context: CheckContext, gateway: string, network: string, account: ProbeAccount): Promise<Check> {
  const results = await Promise.all(
    EASTWEST_PORTS.map(async (port) => ({ port, ...(await probeConnect(context.host, gateway, port, { as: account, timeoutMs: context.timeoutMs })) })),
  );
  const closed = results.filter((r) => r.error);
  const ok = closed.length === 0;
  return {
    check: 'east-west gateway',
    ok,
    detail: ok
      ? `network ${network}: the east-west gateway ${gateway} accepts connections on ${EASTWEST_PORTS.join(' and ')} as ${account.name}`
      : `network ${network}: the east-west gateway ${gateway} does not accept on ${closed.map((r) => `${r.port} (${r.error})`).join(', ')}`,
    ...(ok
      ? {}
      : {
          fix: `open ${closed.map((r) => r.port).join(' and ')} from this VM to ${gateway}, and expose them on the gateway (Istio's multi-network guide: expose-istiod and expose-services, port 15443 AUTO_PASSTHROUGH)`,
        }),
  };
}

async function agentChainCheck(host: HostReader, env: Record<string, string>, mesh: MeshConfig, o: IstiodCheckOptions): Promise<Check> {
  const dir = (env.OUTPUT_CERTS || DEFAULT_OUTPUT_CERTS).replace(/\/+$/, '');
  const path = `${dir}/cert-chain.pem`;
  const chain = await host.readFile(path);
  if (chain === undefined) {
    return {
      check: 'certs',
      ok: false,
      detail: `${path} (the workload certificate the agent writes) is missing`,
      fix: 'the agent writes it once istiod signed its CSR: systemctl status istio; journalctl -u istio; is istiod reachable (the control plane line) and the istio-token valid?',
    };
  }
  const root = (await host.readFile(`${dir}/root-cert.pem`)) ?? (await host.readFile(`${DEFAULT_OUTPUT_CERTS}/root-cert.pem`));
  const md = mesh.proxyMetadata;
  const namespace = md.POD_NAMESPACE ?? o.workload?.namespace;
  const serviceAccount = md.SERVICE_ACCOUNT ?? o.workload?.serviceAccount;
  const identity = namespace && serviceAccount ? { trustDomain: md.TRUST_DOMAIN, namespace, serviceAccount } : undefined;
  const problems = judgeAgentChain(chain, root, { now: Date.now(), identity });
  const ok = problems.length === 0;
  return {
    check: 'certs',
    ok,
    detail: `${path} (written by the agent) ${ok ? 'is valid, chains to the root and is not due' : problems.join(', ')}`,
    ...(ok ? {} : { fix: 'the agent renews it at half its lifetime: journalctl -u istio; is istiod reachable and the istio-token valid (meshvm verify)?' }),
  };
}

/** The first certificate (the leaf) and the rest of a PEM bundle, parsed; a block that is not a certificate throws. */
function parseChain(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((block) => new X509Certificate(block));
}

/**
 * What is wrong with the agent's chain (empty: nothing): not a certificate, not yet or no longer valid, renewal overdue
 * (less than a quarter of its lifetime left), a link not signed by the next, not chaining to the root, another identity.
 */
export function judgeAgentChain(
  pem: string,
  rootPem: string | undefined,
  o: { now: number; identity?: { trustDomain?: string | undefined; namespace: string; serviceAccount: string } | undefined },
): string[] {
  let certs: X509Certificate[];
  try {
    certs = parseChain(pem);
  } catch (error) {
    return [`is not a certificate chain (${(error as Error).message})`];
  }
  const leaf = certs[0];
  if (!leaf) return ['holds no certificate'];
  const problems: string[] = [];
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  const at = (ms: number) => new Date(ms).toISOString();
  if (o.now < from) problems.push(`is not valid before ${at(from)}`);
  else if (o.now >= to) problems.push(`expired ${at(to)}`);
  else if (to - o.now < (to - from) * RENEWAL_OVERDUE_SHARE)
    problems.push(`expires ${at(to)}, with less than a quarter of its lifetime left (the agent renews at half: renewal is failing)`);
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!certs[i]!.verify(certs[i + 1]!.publicKey)) problems.push(`certificate ${i + 1} of the chain is not signed by certificate ${i + 2}`);
  }
  if (rootPem !== undefined) {
    let root: X509Certificate | undefined;
    try {
      root = new X509Certificate(rootPem);
    } catch {
      problems.push('cannot be checked against root-cert.pem (not a certificate)');
    }
    const last = certs.at(-1)!;
    if (root && last.fingerprint256 !== root.fingerprint256 && !last.verify(root.publicKey)) problems.push('does not chain to root-cert.pem');
  }
  if (o.identity) {
    const { trustDomain, namespace, serviceAccount } = o.identity;
    const uris = (leaf.subjectAltName ?? '')
      .split(', ')
      .filter((san) => san.startsWith('URI:'))
      .map((san) => san.slice(4));
    const suffix = `/ns/${namespace}/sa/${serviceAccount}`;
    const want = trustDomain ? `spiffe://${trustDomain}${suffix}` : undefined;
    const right = uris.some((uri) => (want ? uri === want : uri.startsWith('spiffe://') && uri.endsWith(suffix)));
    if (!right) problems.push(`is for ${uris.join(', ') || 'no SPIFFE identity'}, not ${want ?? `spiffe://…${suffix}`}`);
  }
  return problems;
}
