// Recipe certs: classic /etc/certs from the istio.<sa> Secret (or files); istiod the root cert, the istio-token, the mesh config (from the cluster, as istioctl writes it), istiod's /etc/hosts line.
import fs from 'node:fs/promises';
import path from 'node:path';
import { isIP } from 'node:net';
import { lookup, Resolver } from 'node:dns/promises';
import { z } from 'zod';
import { defineRecipe, type RecipeContext, type UndoContext } from '../engine/recipe.ts';
import type { Declared } from '../engine/resource.ts';
import { dnsName } from '../engine/validate.ts';
import { guardLine, guardTree } from '../engine/values.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { ManagedBlock } from '../resources/managed-block.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { memberOf } from './cluster-env.ts';
import {
  dnsmasqRestart,
  flow,
  istiodHost,
  memberProxyConfig,
  namespaceName,
  proxyMetadataAttribute,
  proxyUser,
  serviceAccountName,
  sidecarRestart,
  workload,
  type MemberOptions,
  type MeshMember,
} from './mesh.ts';
import { registrationAttribute, vmLease } from './registration.ts';
import { IstioToken, jwtClaims } from '../resources/istio-token.ts';
import { certsChecks } from './checks/certs.ts';
import { removeOwnFiles } from './undo.ts';

export { jwtClaims };

export const TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
export const MESH_CONFIG = '/etc/istio/config/mesh';
/** The LoadBalancer Service through which VMs reach istiod (istioctl's --ingressService default). */
export const EASTWEST_GATEWAY = 'istio-eastwestgateway';

const fromFiles = z.strictObject({
  from: z.literal('files'),
  /** Paths relative to the runlist (or absolute), read on the machine meshvm runs on. */
  rootCert: z.string(),
  certChain: z.string().optional(),
  key: z.string().optional(),
});

const pemText = z.string().refine((v) => v.includes('-----BEGIN '), 'expected PEM text (a -----BEGIN line)');
/** The PEM text itself, in the runlist (the demo's throwaway certificates: a runlist that works wherever it is copied). */
const fromPem = z.strictObject({ from: z.literal('pem'), rootCert: pemText, certChain: pemText.optional(), key: pemText.optional() });

/** An IP address, or a DNS name resolved at each converge. */
const address = z.string().refine((v) => isIP(v) !== 0 || dnsName.safeParse(v).success, 'expected an IP address or a DNS name');
/** A DNS server: ip, ip:port or [ipv6]:port. */
const dnsServer = z
  .string()
  .refine((v) => /^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(v) || /^[0-9.]+(:\d{1,5})?$/.test(v), 'expected a DNS server: ip, ip:port or [ipv6]:port');

export const certs = defineRecipe({
  name: 'certs',
  description: 'Certificates and the workload token where the sidecar reads them, owned by istio-proxy, keys and tokens readable by it alone.',
  attributes: z.strictObject({
    flow,
    /** Classic: the cluster's istio.<serviceAccount> Secret, PEM files, or the PEM text itself. */
    source: z.union([z.strictObject({ from: z.literal('cluster') }), fromFiles, fromPem]).default({ from: 'cluster' }),
    /** Classic: where the istio.<serviceAccount> Secret lives. */
    namespace: namespaceName.optional(),
    serviceAccount: serviceAccountName.optional(),
    /** istiod: the workload this VM is; its values override the cluster's. */
    workload: workload.optional(),
    systemNamespace: namespaceName.default('istio-system'),
    dir: z.string().default('/etc/certs'),
    /** istiod: how long a minted istio-token lives, and how long before its expiry the next converge re-mints it. */
    tokenSeconds: z.number().int().min(600, 'a TokenRequest must ask for at least 600 seconds').default(43_200),
    renewBeforeSeconds: z.number().int().min(0).default(21_600),
    /** istiod: istiod's address for /etc/hosts (an IP, or a name resolved each converge); by default the east-west gateway's. */
    istiodAddress: address.optional(),
    /** Which LoadBalancer Service answers for which name (as the dns and aws recipes take it): istiod's, else istio-eastwestgateway. */
    controlPlaneServices: z.record(dnsName, z.string()).optional(),
    /** DNS servers to resolve a load balancer's hostname with (ip[:port]); by default the system resolver. */
    lookupServers: z.array(dnsServer).optional(),
    /** istiod: the agent's DNS proxy (ISTIO_META_DNS_CAPTURE), as cluster-env takes it. */
    dnsCapture: z.boolean().default(true),
    dnsAutoAllocate: z.boolean().default(false),
    /** istiod: how the VM is registered (the registration recipe's attribute). */
    registration: registrationAttribute.optional(),
    /** istiod: proxy metadata over the mesh config's (both files get it). */
    proxyMetadata: proxyMetadataAttribute,
    proxyUser,
    cluster: clusterAttribute.optional(),
  }),
  checks: certsChecks,
  /** The fleet view of a classic VM (no registration object stands for it): its Lease, unless the registration recipe publishes. */
  publish: async (a, status, ctx) =>
    a.flow === 'classic' && !ctx.runlist.recipes.includes('registration') ? vmLease.publish(ctx, a.namespace, a.cluster, status) : undefined,
  async declare(a, ctx) {
    const owner = { owner: a.proxyUser, group: a.proxyUser };
    const restart = sidecarRestart(ctx, a.flow);
    const dir = Directory({ path: a.dir, mode: 0o755, ...owner });
    if (a.flow === 'classic') {
      const pems =
        a.source.from === 'files' ? await readPemFiles(a.source, ctx) : a.source.from === 'pem' ? await inlinePems(a.source) : await clusterPems(ctx, a);
      const files = certFiles(a);
      return [
        dir,
        File({ path: files.rootCert, mode: 0o644, ...owner, content: pems.rootCert, track: true }, restart),
        pems.certChain !== undefined && File({ path: files.certChain, mode: 0o644, ...owner, content: pems.certChain, track: true }, restart),
        pems.key !== undefined && File({ path: files.key, mode: 0o600, ...owner, sensitive: true, content: pems.key, track: true }, restart),
      ];
    }
    if (!a.workload) throw new Error('the istiod flow needs the "workload" attribute (name, namespace, serviceAccount)');
    const w = a.workload;
    const k = cluster(ctx, a.cluster, 'the istiod root certificate');
    const rootCert = await k.once(`root-cert:${w.namespace}`, (c) => c.rootCert(w.namespace));
    const { member, options } = await memberOf(ctx, { ...a, workload: w });
    const hosts = await istiodHosts(ctx, { ...a, workload: w });
    return [
      dir,
      File({ path: certFiles(a).rootCert, mode: 0o644, ...owner, content: rootCert, track: true }, restart),
      Directory({ path: '/var/run/secrets', mode: 0o755, ...owner }),
      Directory({ path: path.dirname(TOKEN_PATH), mode: 0o755, ...owner }),
      // a re-minted token restarts nothing: the agent reads the file again for each certificate request
      IstioToken({
        path: TOKEN_PATH,
        namespace: w.namespace,
        serviceAccount: w.serviceAccount,
        expirationSeconds: a.tokenSeconds,
        renewBeforeSeconds: a.renewBeforeSeconds,
        mode: 0o600,
        ...owner,
        mint: (request) =>
          cluster(ctx, a.cluster, 'the istio-token').once(`token:${request.namespace}/${request.serviceAccount}`, (k) => k.requestToken(request)),
      }),
      Directory({ path: '/etc/istio/config', mode: 0o755, ...owner }),
      Directory({ path: '/etc/istio/proxy', mode: 0o755, ...owner }),
      File({ path: MESH_CONFIG, mode: 0o644, ...owner, content: renderMeshConfig(member, options), track: true }, restart),
      // dnsmasq answers from /etc/hosts: it restarts when the line moves (when the dns recipe manages it)
      ManagedBlock({ path: '/etc/hosts', name: HOSTS_BLOCK, lines: hosts }, dnsmasqRestart(ctx)),
    ];
  },
  /**
   * The files declare writes, where they hold what meshvm wrote; the token where it is this workload's; istiod's block of
   * /etc/hosts (between meshvm's markers); with --purge the directories too, when nothing else is left in them.
   */
  async undo(a, ctx) {
    const files = certFiles(a);
    if (a.flow === 'classic')
      return [
        ...(await removeOwnFiles(ctx, [files.rootCert, files.certChain, files.key])),
        ctx.purge && Directory({ path: a.dir, ensure: 'absent' }),
        ...(ctx.runlist.recipes.includes('registration') ? [] : await vmLease.undo(ctx, a.namespace, a.cluster)),
      ];
    return [
      ManagedBlock({ path: '/etc/hosts', name: HOSTS_BLOCK, lines: [], ensure: 'absent' }),
      ...(await removeOwnFiles(ctx, [MESH_CONFIG, files.rootCert])),
      ...(await removeToken(ctx, a.workload)),
      ...(ctx.purge ? await removeAgentCerts(ctx, files, a.proxyUser) : []),
      ...(ctx.purge ? [...ISTIOD_DIRS, a.dir].map((path) => Directory({ path, ensure: 'absent' })) : []),
    ];
  },
});

/** The certificate files of each flow, where declare writes them and undo removes them. */
function certFiles(a: { dir: string }) {
  return { rootCert: `${a.dir}/root-cert.pem`, certChain: `${a.dir}/cert-chain.pem`, key: `${a.dir}/key.pem` };
}

/** The name of istiod's block in /etc/hosts (its markers: # BEGIN meshvm istiod). */
const HOSTS_BLOCK = 'istiod';
/** The directories of the istiod flow's files, deepest first (undo removes them in this order when empty). */
const ISTIOD_DIRS = [path.dirname(TOKEN_PATH), '/var/run/secrets', '/etc/istio/proxy', '/etc/istio/config'];

/**
 * The workload certificate and key the sidecar's agent wrote beside the root certificate (pilot-agent's OUTPUT_CERTS):
 * the sidecar's, purged with it, where they are owned by the account it runs as; others are noted.
 */
async function removeAgentCerts(ctx: UndoContext, files: ReturnType<typeof certFiles>, proxyUser: string): Promise<Declared[]> {
  const out: Declared[] = [];
  for (const file of [files.certChain, files.key]) {
    const stat = await ctx.host.stat(file);
    if (!stat) continue;
    if (stat.type === 'file' && stat.owner === proxyUser) out.push(File({ path: file, ensure: 'absent', sensitive: true }));
    else ctx.note(`left ${file}: not the sidecar agent's (a ${stat.type} owned by ${stat.owner}, not ${proxyUser})`);
  }
  return out;
}

/** The token, when it is one for this workload's service account (a JWT whose subject says so); anything else is noted. */
async function removeToken(ctx: UndoContext, w: { namespace: string; serviceAccount: string } | undefined): Promise<Declared[]> {
  const text = (await ctx.host.stat(TOKEN_PATH))?.type === 'file' ? await ctx.host.readFile(TOKEN_PATH) : undefined;
  if (text === undefined) return [];
  const subject = jwtClaims(text.trim())?.sub;
  if (w && subject === `system:serviceaccount:${w.namespace}:${w.serviceAccount}`) return [File({ path: TOKEN_PATH, ensure: 'absent', sensitive: true })];
  ctx.note(`left ${TOKEN_PATH}: it is not a token of ${w ? `${w.namespace}/${w.serviceAccount}` : 'this workload'}`);
  return [];
}

async function readPemFiles(source: z.output<typeof fromFiles>, ctx: RecipeContext) {
  const read = async (file: string, what: string) => {
    const full = path.resolve(ctx.runlist.dir, file);
    const text = await fs.readFile(full, 'utf8').catch((error: NodeJS.ErrnoException) => {
      throw new Error(`cannot read the ${what} ${full}: ${error.code ?? error.message}`);
    });
    if (!text.includes('-----BEGIN ')) throw new Error(`${full} is not PEM (no -----BEGIN line)`);
    return text;
  };
  const key = source.key === undefined ? undefined : await read(source.key, 'private key');
  if (key !== undefined) (await import('../engine/secrets.ts')).secrets.add(key);
  return {
    rootCert: await read(source.rootCert, 'root certificate'),
    certChain: source.certChain === undefined ? undefined : await read(source.certChain, 'certificate chain'),
    key,
  };
}

async function inlinePems(source: z.output<typeof fromPem>) {
  if (source.key !== undefined) (await import('../engine/secrets.ts')).secrets.add(source.key);
  return source;
}

async function clusterPems(
  ctx: RecipeContext,
  a: { namespace?: string | undefined; serviceAccount?: string | undefined; cluster?: z.output<typeof clusterAttribute> | undefined },
) {
  if (!a.namespace || !a.serviceAccount) throw new Error('the classic flow reads the istio.<serviceAccount> Secret: set "namespace" and "serviceAccount"');
  const { namespace, serviceAccount } = a;
  return cluster(ctx, a.cluster, 'the certificates').once(`istio-secret:${namespace}/${serviceAccount}`, (k) => k.istioSecret(namespace, serviceAccount));
}

/**
 * The istiod lines of /etc/hosts (istioctl's hosts file): "<address> istiod[-<rev>].<ns>.svc" for the east-west gateway's
 * address, or istiodAddress; a load balancer with a hostname (AWS) is resolved now, each converge, so the line follows it.
 */
async function istiodHosts(
  ctx: RecipeContext,
  a: {
    workload: { revision: string };
    systemNamespace: string;
    istiodAddress?: string | undefined;
    controlPlaneServices?: Record<string, string> | undefined;
    lookupServers?: string[] | undefined;
    cluster?: z.output<typeof clusterAttribute> | undefined;
  },
): Promise<string[]> {
  const host = istiodHost(a.systemNamespace, a.workload.revision);
  let target = a.istiodAddress;
  let what = 'certs.istiodAddress';
  if (target === undefined) {
    const short = host.split('.')[0]!;
    const service = a.controlPlaneServices?.[short] ?? a.controlPlaneServices?.['istiod'] ?? EASTWEST_GATEWAY;
    const found = await cluster(ctx, a.cluster, "istiod's address (certs.istiodAddress)")
      .kept(
        `lb:${a.systemNamespace}:${service}`,
        (await import('../clients/kubernetes.ts')).controlPlaneRead({ namespace: a.systemNamespace, services: [service] }),
      )
      .catch((error: Error) => {
        if (error.name !== 'MissingServiceError') throw error;
        throw new Error(`${error.message}: install the east-west gateway (or set certs.istiodAddress)`, { cause: error });
      });
    target = found.find((f) => f.service === service)!.address;
    what = `the load balancer of Service ${a.systemNamespace}/${service}`;
  }
  const addresses = isIP(target) !== 0 ? [target] : await resolveName(target, what, a.lookupServers);
  return renderHosts(addresses, host);
}

/** The addresses a name has now, IPv4 first, through the system resolver (getaddrinfo) or the given DNS servers. */
export async function resolveName(name: string, what: string, servers?: readonly string[]): Promise<string[]> {
  let found: string[];
  try {
    if (servers?.length) {
      const resolver = new Resolver({ timeout: 2000, tries: 2 });
      resolver.setServers([...servers]);
      const answers = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
      found = answers.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
      const failure = answers.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (found.length === 0 && failure) throw failure.reason;
    } else {
      found = (await lookup(name, { all: true })).map((r) => r.address);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new Error(
      `cannot resolve ${name} (${what}, for istiod's line in /etc/hosts): ${code}; check that this VM resolves it${servers?.length ? ` through ${servers.join(', ')}` : ''}, or set certs.istiodAddress to an IP address`,
    );
  }
  const unique = [...new Set(found)].filter((ip) => isIP(ip) !== 0);
  if (unique.length === 0) throw new Error(`cannot resolve ${name} (${what}, for istiod's line in /etc/hosts): no address; set certs.istiodAddress`);
  return unique.sort((x, y) => isIP(x) - isIP(y) || (x < y ? -1 : x > y ? 1 : 0));
}

/** istioctl's hosts file: one "<ip> <istiod host>" line (one per address of a resolved name). */
export function renderHosts(addresses: readonly string[], host: string): string[] {
  return addresses.map((ip) => {
    if (isIP(ip) === 0) throw new Error(`${JSON.stringify(ip)} is not an IP address; /etc/hosts lines need one`);
    return `${ip} ${host}`;
  });
}

/** /etc/istio/config/mesh as istioctl writes mesh.yaml: { defaultConfig } of the member, marshalled as sigs.k8s.io/yaml does. */
export function renderMeshConfig(m: MeshMember, o: MemberOptions): string {
  const tree = { defaultConfig: memberProxyConfig(m, o) };
  guardTree(MESH_CONFIG, tree);
  return renderGoYaml(tree);
}

// --- YAML as sigs.k8s.io/yaml (go-yaml v2) writes it: keys in its order, scalars styled and folded as its emitter does ---

const BEST_WIDTH = 80;

/** go-yaml v2's map key order (sorter.go keyList.Less): letters after non-letters, digit runs by value. */
export function goYamlKeyLess(a: string, b: string): boolean {
  const ar = Array.from(a);
  const br = Array.from(b);
  const letter = (c: string) => /\p{L}/u.test(c);
  const digit = (c: string | undefined) => c !== undefined && /[0-9]/.test(c);
  for (let i = 0; i < ar.length && i < br.length; i++) {
    if (ar[i] === br[i]) continue;
    const al = letter(ar[i]!);
    const bl = letter(br[i]!);
    if (al && bl) return ar[i]! < br[i]!;
    if (al || bl) return bl;
    let an = 0;
    let bn = 0;
    if (ar[i] === '0' || br[i] === '0') {
      for (let j = i - 1; j >= 0 && digit(ar[j]); j--) {
        if (ar[j] !== '0') {
          an = 1;
          bn = 1;
          break;
        }
      }
    }
    let ai = i;
    let bi = i;
    for (; ai < ar.length && digit(ar[ai]); ai++) an = an * 10 + Number(ar[ai]);
    for (; bi < br.length && digit(br[bi]); bi++) bn = bn * 10 + Number(br[bi]);
    if (an !== bn) return an < bn;
    if (ai !== bi) return ai < bi;
    return ar[i]! < br[i]!;
  }
  return ar.length < br.length;
}

/** A float64 as Go's strconv.FormatFloat(f, 'g', -1, 64) writes it (what go-yaml writes for a JSON number). */
export function goFloat(n: number): string {
  if (Number.isNaN(n)) return '.nan';
  if (!Number.isFinite(n)) return n > 0 ? '.inf' : '-.inf';
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  // shortest digits; %e when the decimal exponent is < -4 or >= 6 (Go's 'g' with precision -1), else %f
  const [mantissa = '', exp = '0'] = n.toExponential().split('e');
  const e = Number(exp);
  if (e < -4 || e >= 6) return `${mantissa}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  return String(n);
}

/** Would go-yaml read the plain text back as something other than a string (YAML 1.1: bools, nulls, numbers, timestamps)? */
function resolvesToNonString(s: string): boolean {
  if (s === '') return true;
  const words = ['y', 'Y', 'yes', 'Yes', 'YES', 'n', 'N', 'no', 'No', 'NO', 'true', 'True', 'TRUE', 'false', 'False', 'FALSE'];
  const more = ['on', 'On', 'ON', 'off', 'Off', 'OFF', '~', 'null', 'Null', 'NULL', '.inf', '.Inf', '.INF', '+.inf', '+.Inf', '+.INF'];
  const rest = ['-.inf', '-.Inf', '-.INF', '.nan', '.NaN', '.NAN', '<<'];
  if ([...words, ...more, ...rest].includes(s)) return true;
  // go-yaml's resolve drops "_" before it tries a number (1_0.5 is the float 10.5), when the text starts as one can
  const plain = s.replaceAll('_', '');
  if (/^[-+.0-9]/.test(s) && /^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/.test(plain)) return true;
  if (/^[-+]?(0|[1-9][0-9]*)$/.test(plain) || /^[-+]?0[0-7]+$/.test(plain) || /^[-+]?0x[0-9a-fA-F]+$/.test(plain)) return true;
  if (/^[-+]?0b[01]+$/.test(plain) || /^[-+]?0o[0-7]+$/.test(plain)) return true;
  if (/^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$/.test(s)) return true;
  return /^\d{4}-\d{1,2}-\d{1,2}([Tt ]\d{1,2}:\d{1,2}:\d{1,2}(\.\d*)?(Z|[-+]\d{1,2}(:\d{2})?)?)?$/.test(s);
}

/** The emitter's analysis of a one-line scalar (yaml_emitter_analyze_scalar): may it be plain in block context, single-quoted? */
function analyze(s: string): { plain: boolean; single: boolean } {
  // block indicators forbid a plain scalar in block context (flow indicators matter only in flow context, which is never written)
  let block = s.startsWith('---') || s.startsWith('...');
  let special = false;
  const chars = Array.from(s);
  const blank = (c: string | undefined) => c === undefined || c === ' ' || c === '\t';
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const followed = blank(chars[i + 1]);
    if (i === 0 && '#,[]{}&*!|>\'"%@`'.includes(c)) block = true;
    else if ((c === ':' || (i === 0 && (c === '?' || c === '-'))) && followed) block = true;
    else if (c === '#' && i > 0 && blank(chars[i - 1])) block = true;
    const code = c.codePointAt(0)!;
    const printable =
      code === 0x0a ||
      (code >= 0x20 && code <= 0x7e) ||
      code === 0x85 ||
      (code >= 0xa0 && code <= 0xd7ff) ||
      (code >= 0xe000 && code <= 0xfffd && code !== 0xfeff) ||
      code >= 0x10000;
    if (!printable) special = true;
  }
  const leading = chars[0] === ' ';
  const trailing = chars[chars.length - 1] === ' ';
  return { plain: !(block || leading || trailing || special), single: !special };
}

/** One scalar as go-yaml writes it, folded at spaces past column 80 (continuations at `indent`); `column` is where it starts. */
function scalar(value: unknown, column: number, indent: number, isKey = false): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return goFloat(value);
  const s = String(value);
  guardLine('a YAML document', isKey ? 'a key' : 'a value', s);
  const a = analyze(s);
  const style = resolvesToNonString(s) ? 'double' : a.plain && !(isKey && s === '') ? 'plain' : a.single ? 'single' : 'double';
  const open = style === 'plain' ? '' : style === 'single' ? "'" : '"';
  const body =
    style === 'single'
      ? s.replaceAll("'", "''")
      : style === 'double'
        ? // go-yaml escapes what is not printable, and the byte order mark (yaml_emitter_write_double_quoted_scalar)
          s
            .replace(/[\\"]/g, (c) => `\\${c}`)
            .replace(/[^\x20-\x7e\u00a0-\ufefe\uff00-\ufffd\u{10000}-\u{10ffff}]/gu, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`)
        : s;
  if (isKey) return open + body + open;
  // fold: a space (not the first or last, not before another space) past the width becomes a line break
  let out = open;
  let col = column + open.length;
  const chars = Array.from(body);
  let spaces = false;
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === ' ') {
      const inner = style === 'plain' || (i > 0 && i < chars.length - 1);
      const beforeSpace = style !== 'double' && chars[i + 1] === ' ';
      if (!spaces && col > BEST_WIDTH && inner && !beforeSpace) {
        out += `\n${' '.repeat(indent)}`;
        col = indent;
        if (style === 'double' && chars[i + 1] === ' ') out += '\\';
      } else {
        out += c;
        col++;
      }
      spaces = true;
    } else {
      out += c;
      col++;
      spaces = false;
    }
  }
  return out + open;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A value as sigs.k8s.io/yaml's Marshal writes it (go-yaml v2: indentless lists, sorted keys, 80 columns). */
export function renderGoYaml(value: Record<string, unknown>): string {
  const lines: string[] = [];
  const emitMap = (map: Record<string, unknown>, indent: number, first?: string) => {
    const keys = Object.keys(map).sort((x, y) => (goYamlKeyLess(x, y) ? -1 : goYamlKeyLess(y, x) ? 1 : 0));
    keys.forEach((key, i) => {
      const prefix = i === 0 && first !== undefined ? first : ' '.repeat(indent);
      const head = `${prefix}${scalar(key, prefix.length, indent, true)}:`;
      emitValue(map[key], head, indent);
    });
  };
  const emitValue = (v: unknown, head: string, indent: number) => {
    if (isMap(v) && Object.keys(v).length > 0) {
      lines.push(head);
      emitMap(v, indent + 2);
    } else if (Array.isArray(v) && v.length > 0) {
      lines.push(head);
      emitList(v, indent);
    } else if (isMap(v)) lines.push(`${head} {}`);
    else if (Array.isArray(v)) lines.push(`${head} []`);
    else lines.push(`${head} ${scalar(v, head.length + 1, indent + 2)}`);
  };
  const emitList = (list: unknown[], indent: number) => {
    for (const item of list) {
      const dash = `${' '.repeat(indent)}- `;
      if (isMap(item) && Object.keys(item).length > 0) emitMap(item, indent + 2, dash);
      else if (Array.isArray(item) && item.length > 0) {
        lines.push(dash.trimEnd());
        emitList(item, indent + 2);
      } else if (isMap(item)) lines.push(`${dash}{}`);
      else if (Array.isArray(item)) lines.push(`${dash}[]`);
      else lines.push(`${dash}${scalar(item, dash.length, indent + 2)}`);
    }
  };
  emitMap(value, 0);
  return `${lines.join('\n')}\n`;
}
