// The certs recipe's checks: its certificates present, owned, moded, parsed, chained and not about to expire; the istio-token valid;
// in the istiod flow (it declared the mesh config) istiod reached as the sidecar reaches it, and the chain the agent wrote.
import { X509Certificate } from 'node:crypto';
import type { Check, CheckContext } from '../../engine/check.ts';
import { formatMode, type HostReader } from '../../engine/host.ts';
import type { Declared } from '../../engine/resource.ts';
import type { FileSpec } from '../../resources/file.ts';
import { jwtClaims, type IstioTokenSpec } from '../../resources/istio-token.ts';
import { istiodChecks } from './istiod.ts';

/** A certificate must stay valid at least this long. */
export const CERT_WINDOW_SECONDS = 86_400;

/** The fields of an istio_token declaration these checks read. */
export type DeclaredToken = Pick<IstioTokenSpec, 'path' | 'owner' | 'group' | 'mode' | 'renewBeforeSeconds' | 'namespace' | 'serviceAccount' | 'audiences'>;

/**
 * The certs attributes these checks read. Not z.output of the recipe's schema: that schema is written inline in
 * defineRecipe, and a type taken from the recipe it is wired into is circular. Wiring `checks: certsChecks` still
 * fails to compile if the recipe's attributes lose `dir` or change its type.
 */
export interface CertsCheckAttributes {
  dir: string;
  /** The account the sidecar runs as (istiod flow: the control plane is tried as it). */
  proxyUser?: string | undefined;
  systemNamespace?: string | undefined;
}

/** The mesh config the istiod flow declares; its presence says this is the istiod flow. */
export const MESH_CONFIG_PATH = '/etc/istio/config/mesh';

type Owned = { path: string; owner?: string | undefined; group?: string | undefined; mode?: number | undefined };

export async function certsChecks(a: CertsCheckAttributes, context: CheckContext): Promise<Check[]> {
  const dir = a.dir.replace(/\/+$/, '');
  const isPem = (d: Declared) => d.type.kind === 'file' && (d.spec as FileSpec).path.startsWith(`${dir}/`) && (d.spec as FileSpec).path.endsWith('.pem');
  const rootCert = context.declared.find((d) => isPem(d) && (d.spec as FileSpec).path.endsWith('/root-cert.pem'));
  const checks: Check[] = [];
  for (const d of context.declared) {
    if (isPem(d)) checks.push(await pemCheck(context.host, d.spec as FileSpec, rootCert && (rootCert.spec as FileSpec).path));
    else if (d.type.kind === 'istio_token') checks.push(await tokenCheck(context.host, d.spec as DeclaredToken));
  }
  const meshConfig = context.declared.find((d) => d.type.kind === 'file' && (d.spec as FileSpec).path === MESH_CONFIG_PATH);
  if (!meshConfig) return checks;
  const token = context.declared.find((d) => d.type.kind === 'istio_token')?.spec as DeclaredToken | undefined;
  const istiod = await istiodChecks(
    {
      proxyUser: a.proxyUser ?? 'istio-proxy',
      systemNamespace: a.systemNamespace ?? 'istio-system',
      meshConfig: (meshConfig.spec as FileSpec).content,
      workload: token && { namespace: token.namespace, serviceAccount: token.serviceAccount },
    },
    context,
  );
  // the control plane first (what everything else depends on), the agent's chain with the certificates, the gateway last
  return [...istiod.filter((c) => c.check === 'control plane'), ...checks, ...istiod.filter((c) => c.check !== 'control plane')];
}

async function pemCheck(host: HostReader, spec: FileSpec, rootPath: string | undefined): Promise<Check> {
  const problems = await ownership(host, spec);
  if (problems === undefined) return missing(spec.path);
  if (problems.notAFile) return result(spec.path, problems, 'meshvm converge');
  // a key is only present, owned and moded: its content is a secret and not a certificate
  if (!spec.path.endsWith('/key.pem')) {
    try {
      const cert = new X509Certificate((await host.readFile(spec.path)) ?? '');
      if (Date.parse(cert.validTo) < Date.now() + CERT_WINDOW_SECONDS * 1000) problems.push(`expires ${new Date(cert.validTo).toISOString()}`);
      // an unreadable root is reported on its own line, not as this file's fault
      const root = spec.path.endsWith('/cert-chain.pem') && rootPath ? await readCertificate(host, rootPath) : undefined;
      if (root && !cert.verify(root.publicKey)) problems.push(`is not signed by ${rootPath!.slice(rootPath!.lastIndexOf('/') + 1)}`);
    } catch (error) {
      problems.push(`is not a certificate (${(error as Error).message})`);
    }
  }
  return result(spec.path, problems, 'meshvm converge (it renews what the cluster has renewed)');
}

async function readCertificate(host: HostReader, path: string): Promise<X509Certificate | undefined> {
  try {
    return new X509Certificate((await host.readFile(path)) ?? '');
  } catch {
    return undefined;
  }
}

/** The token on disk: a JWT for the declared service account, not expired, not due for renewal. Never compared to a planned content. */
async function tokenCheck(host: HostReader, spec: DeclaredToken): Promise<Check> {
  const problems = await ownership(host, spec);
  if (problems === undefined) return missing(spec.path);
  if (problems.notAFile) return result(spec.path, problems, 'meshvm converge');
  const claims = jwtClaims(((await host.readFile(spec.path)) ?? '').trim());
  const exp = typeof claims?.exp === 'number' ? claims.exp : undefined;
  const expires = exp === undefined ? '' : new Date(exp * 1000).toISOString();
  const subject = `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`;
  if (!claims || exp === undefined) problems.push('is not a token');
  else if (exp * 1000 <= Date.now()) problems.push(`expired ${expires}`);
  else if (exp * 1000 - Date.now() <= spec.renewBeforeSeconds * 1000) problems.push(`is due for renewal (expires ${expires})`);
  if (claims && claims.sub !== subject) problems.push(`is for ${claims.sub ?? 'no subject'}, not ${subject}`);
  const audiences = [claims?.aud ?? []].flat();
  if (claims && !spec.audiences.every((want) => audiences.includes(want)))
    problems.push(`is for the audiences ${audiences.join(', ') || '(none)'}, not ${spec.audiences.join(', ')}`);
  return result(spec.path, problems, 'meshvm converge (it mints a new token for the workload)');
}

/** What differs from the declared owner, group and mode; undefined when the file is missing. */
async function ownership(host: HostReader, spec: Owned): Promise<(string[] & { notAFile?: boolean }) | undefined> {
  const stat = await host.stat(spec.path);
  if (!stat) return undefined;
  if (stat.type !== 'file') return Object.assign([`is a ${stat.type}, not a file`], { notAFile: true });
  const problems: string[] = [];
  if (spec.owner && stat.owner !== spec.owner) problems.push(`owned by ${stat.owner}, not ${spec.owner}`);
  if (spec.group && stat.group !== spec.group) problems.push(`group ${stat.group}, not ${spec.group}`);
  if (typeof spec.mode === 'number' && stat.mode !== spec.mode) problems.push(`mode ${formatMode(stat.mode)}, not ${formatMode(spec.mode)}`);
  return problems;
}

const missing = (path: string): Check => ({ check: 'certs', ok: false, detail: `${path} is missing`, fix: 'meshvm converge' });

function result(path: string, problems: readonly string[], fix: string): Check {
  const ok = problems.length === 0;
  return { check: 'certs', ok, detail: `${path} ${ok ? 'is in place and valid' : problems.join(', ')}`, ...(ok ? {} : { fix }) };
}
