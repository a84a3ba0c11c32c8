// Recipe sidecar: the istio-sidecar package (a .deb or .rpm by URL and sha256, or apt/dnf) and /var/lib/istio/envoy/sidecar.env; a sidecar istiod cannot serve refused.
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import type { HostReader } from '../engine/host.ts';
import { INSTALLED_DEBS_DIR } from '../engine/state-paths.ts';
import { port, unique } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { installedPackage, Package, packageSpec, parseDpkgQuery } from '../resources/package.ts';
import { rpmVersionMatches } from '../resources/package/dnf.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { renderEnvFile } from './env-file.ts';
import { flow, namespaceName, proxyUser, sidecarRestart, workload, type Workload } from './mesh.ts';
import { interceptionMode } from './interception.ts';
import { purgePackage, removeOwnFiles } from './undo.ts';
import { containerSettings, containerSidecar, undoContainerSidecar, wantedImageVersion } from './sidecar-container.ts';

const debianVersion = z.string().regex(/^[A-Za-z0-9.+~:-]+$/, 'expected a Debian version string such as 1.24.0');
const rpmVersion = z.string().regex(/^[A-Za-z0-9.+~:_^-]+$/, 'expected an RPM version string such as 1.24.0 or 1.24.0-1');

const sidecarPackage = z.discriminatedUnion('from', [
  z.strictObject({ from: z.literal('apt'), name: z.string().default('istio-sidecar'), version: debianVersion.optional() }),
  z.strictObject({
    from: z.literal('deb'),
    name: z.string().default('istio-sidecar'),
    url: z.string(),
    sha256: z.string(),
    caFile: z.string().optional(),
    /** The version the .deb carries, for the version-skew check before it is downloaded (Istio's URLs name it: .../releases/1.24.0/deb/). */
    version: debianVersion.optional(),
  }),
  /** RPM-family hosts (RHEL, Rocky, Alma, Amazon Linux): dnf (or yum) from the host's repositories; version: [epoch:]version-release or the version. */
  z.strictObject({ from: z.literal('dnf'), name: z.string().default('istio-sidecar'), version: rpmVersion.optional() }),
  z.strictObject({
    from: z.literal('rpm'),
    name: z.string().default('istio-sidecar'),
    url: z.string(),
    sha256: z.string(),
    caFile: z.string().optional(),
    /** The version the .rpm carries, for the version-skew check before it is downloaded (Istio's URLs name it: .../releases/1.24.0/rpm/). */
    version: rpmVersion.optional(),
  }),
  /** Installed some other way (an image, or a scratch root in the demo); `version` says which, for the version-skew check. */
  z.strictObject({ from: z.literal('none'), version: debianVersion.optional() }),
]);
type SidecarPackage = z.output<typeof sidecarPackage>;

export const sidecarAttributes = z
  .strictObject({
    flow,
    package: sidecarPackage.default({ from: 'apt', name: 'istio-sidecar' }),
    /**
     * ISTIO_INBOUND_PORTS of sidecar.env. Classic: required. istiod: cluster.env carries the workload's ports and wins
     * (istio-start.sh loads it last), so none by default; ports other than the workload's are refused.
     */
    inboundPorts: unique(port).min(1).optional(),
    excludeInboundPorts: unique(port).default([]),
    /** REDIRECT (default) or TPROXY. */
    interceptionMode: z.enum(['REDIRECT', 'TPROXY']).optional(),
    /** package: the istio-sidecar package's istio.service; container: istio.service runs the proxy image (sidecar.container). */
    runtime: z.enum(['package', 'container']).default('package'),
    /** runtime container: the image (pinned by digest), the engine (podman or docker, from Debian's packages). */
    container: containerSettings.optional(),
    /** none: ISTIO_CUSTOM_IP_TABLES=true, istio-start.sh installs no nat rules (the interception recipe's no-iptables mode). */
    interception: interceptionMode,
    proxyUser,
    /** istiod: the workload this VM is (its ports are cluster.env's, its revision names the istiod to match). */
    workload: workload.optional(),
    systemNamespace: namespaceName.default('istio-system'),
    /**
     * istiod: refuse a sidecar newer than istiod or more than one minor behind it (Istio supports neither), read from the
     * cluster before anything changes; ignore: install it anyway.
     */
    versionSkew: z.enum(['refuse', 'ignore']).default('refuse'),
    cluster: clusterAttribute.optional(),
  })
  // the classic flow's cluster.env has no ports: sidecar.env must say them
  .superRefine((a, ctx) => {
    if (a.flow === 'classic' && a.inboundPorts === undefined)
      ctx.addIssue({ code: 'custom', path: ['inboundPorts'], message: 'Invalid input: expected array, received undefined' });
    if (a.runtime === 'container' && a.container === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['container'],
        message: 'runtime container needs container.image (e.g. docker.io/istio/proxyv2:1.24.0@sha256:<digest>)',
      });
    if (a.runtime === 'container' && a.flow === 'classic')
      ctx.addIssue({
        code: 'custom',
        path: ['runtime'],
        message: 'runtime container runs the istiod-flow proxy image (Istio 1.8+); the classic flow has a node agent beside it',
      });
  });
export type SidecarAttributes = z.output<typeof sidecarAttributes>;

export const sidecar = defineRecipe({
  name: 'sidecar',
  description:
    'The istio-sidecar package (istio restarted once when its version changes; one istiod cannot serve refused) and sidecar.env (ISTIO_INBOUND_PORTS and the exclusions), owned by istio-proxy.',
  attributes: sidecarAttributes,
  async declare(a, ctx) {
    const inboundPorts = sidecarInboundPorts(a);
    // the skew guard knows the package's versions; the image's tag is not checked
    // the package's version, or the proxy image's tag when that image is not in the store yet (recipes/sidecar-container.ts)
    if (a.flow === 'istiod' && a.versionSkew === 'refuse')
      await checkVersionSkew(ctx, a, a.runtime === 'container' && a.container ? await wantedImageVersion(ctx.host, a.container) : undefined);
    const pkg = a.package;
    // a new package version replaces the binaries istio runs: it restarts once (not at all when this run starts it)
    const restart = sidecarRestart(ctx, a.flow);
    const fromPackage = a.runtime === 'package';
    return [
      // a failed upgrade puts the previous version back, and its error says whether istio still runs it
      fromPackage &&
        pkg.from === 'apt' &&
        Package(packageSpec.parse({ name: pkg.name, service: 'istio', ...(pkg.version && { version: pkg.version }) }), restart),
      fromPackage &&
        pkg.from === 'deb' &&
        Package({ name: pkg.name, service: 'istio', deb: { url: pkg.url, sha256: pkg.sha256, ...(pkg.caFile && { caFile: pkg.caFile }) } }, restart),
      // the istio-sidecar RPM's known traps: istio-start.sh runs `hostname`, which the RPM does not require and minimal
      // RHEL-family images lack (istio/istio#45866); its scripts expect the istio-proxy account, made with Debian's
      // addgroup where it is missing (#31203): sidecar.env's owner requires that account from an earlier recipe
      // (istio-proxy-user), so every runlist that converges creates it before this package is installed
      fromPackage && (pkg.from === 'dnf' || pkg.from === 'rpm') && Package({ name: 'hostname' }),
      fromPackage &&
        pkg.from === 'dnf' &&
        Package(packageSpec.parse({ name: pkg.name, service: 'istio', ...(pkg.version && { version: pkg.version }) }), restart),
      fromPackage &&
        pkg.from === 'rpm' &&
        Package({ name: pkg.name, service: 'istio', rpm: { url: pkg.url, sha256: pkg.sha256, ...(pkg.caFile && { caFile: pkg.caFile }) } }, restart),
      // the proxy image instead of the package (recipes/sidecar-container.ts)
      a.runtime === 'container' &&
        a.container &&
        containerSidecar(a.container, { interception: a.interception, tproxy: a.interceptionMode === 'TPROXY', proxyUser: a.proxyUser }, restart),
      Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
      File(
        {
          path: SIDECAR_ENV,
          track: true,
          mode: 0o644,
          owner: a.proxyUser,
          group: a.proxyUser,
          content: renderEnvFile({
            ISTIO_INBOUND_PORTS: inboundPorts,
            ISTIO_INBOUND_EXCLUDE_PORTS: a.excludeInboundPorts.length ? a.excludeInboundPorts.join(',') : undefined,
            ISTIO_INBOUND_INTERCEPTION_MODE: a.interceptionMode,
            ISTIO_CUSTOM_IP_TABLES: a.interception === 'none' ? 'true' : undefined,
          }),
        },
        restart,
      ),
    ];
  },
  /** sidecar.env when it holds what meshvm wrote; with --purge the package too (apt-get purge), then its emptied directory. */
  undo: async (a, ctx) => [
    ...(await removeOwnFiles(ctx, [SIDECAR_ENV])),
    ...(ctx.purge && a.runtime === 'package' && a.package.from !== 'none' ? await purgePackage(ctx, a.package.name, PACKAGE_LINKS) : []),
    a.runtime === 'container' && a.container && (await undoContainerSidecar(a.container, ctx)),
    // the directory cluster.env shares: removed by the cluster-env recipe's undo, which comes after this one
    ctx.purge && !ctx.runlist.recipes.includes('cluster-env') && Directory({ path: ENVOY_DIR, ensure: 'absent' }),
  ],
});

const SIDECAR_ENV = `${ENVOY_DIR}/sidecar.env`;
/** What the istio-sidecar package's postinst makes and dpkg's purge leaves (it has no postrm): /etc/istio -> /var/lib/istio. */
const PACKAGE_LINKS = { '/etc/istio': '/var/lib/istio' };

/**
 * ISTIO_INBOUND_PORTS for sidecar.env. Classic: the attribute. istiod: none by default, since cluster.env carries the
 * workload's ports and wins (istio-start.sh loads it last); ports given here must be the workload's, or they are refused
 * naming both (an unset workload.ports leaves cluster.env's to the WorkloadGroup, or "*").
 */
export function sidecarInboundPorts(
  a: Pick<SidecarAttributes, 'flow' | 'inboundPorts'> & { workload?: Pick<Workload, 'ports'> | undefined },
): string | undefined {
  const given = a.inboundPorts?.join(',');
  if (a.flow === 'classic' || given === undefined) return given;
  const workloadPorts = a.workload?.ports.join(',') ?? '';
  if (!samePorts(given, workloadPorts))
    throw new Error(
      `conflicting inbound ports: sidecar.inboundPorts (sidecar.env ISTIO_INBOUND_PORTS=${given}) and the workload's (cluster.env ISTIO_INBOUND_PORTS=${workloadPorts || 'from the WorkloadGroup, or * for all'}), which wins when istio starts; give the ports once, in workload.ports, and drop sidecar.inboundPorts`,
    );
  return given;
}

function samePorts(x: string, y: string): boolean {
  const set = (s: string) => [...new Set(s.split(','))].sort().join(',');
  return set(x) === set(y);
}

// ---------------------------------------------------------------------------------------------------------------
// Version skew: a sidecar may be as new as istiod, or one minor behind (Istio's supported data-plane skew)

/** major.minor of a Debian or Istio version (an epoch and anything after the minor ignored); undefined when it has none. */
export function minorVersion(version: string): { major: number; minor: number } | undefined {
  const match = /^(?:\d+:)?v?(\d+)\.(\d+)(?:[.+~-]|$)/.exec(version.trim());
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

/** Why a sidecar of this version cannot be used with this istiod, or undefined when it can (pure). */
export function versionSkewProblem(sidecarVersion: string, istiodVersion: string): string | undefined {
  const s = minorVersion(sidecarVersion);
  const i = minorVersion(istiodVersion);
  if (!s) return `the sidecar version ${JSON.stringify(sidecarVersion)} has no major.minor to compare with istiod ${istiodVersion}`;
  if (!i) return `istiod's version ${JSON.stringify(istiodVersion)} has no major.minor to compare with the sidecar ${sidecarVersion}`;
  const behind = (i.major - s.major) * 1000 + (i.minor - s.minor);
  if (behind < 0)
    return `the sidecar ${sidecarVersion} is newer than istiod ${istiodVersion}: Istio does not support a data plane newer than its control plane`;
  if (behind > 1)
    return `the sidecar ${sidecarVersion} is ${s.major === i.major ? `${behind} minor versions` : 'a major version'} behind istiod ${istiodVersion}: Istio supports a sidecar at most one minor behind`;
  return undefined;
}

/**
 * The version of the sidecar this run would install (or is told an image has: from none), undefined when nothing new is
 * installed (the package as it was, say after istiod moved on: refusing then would stop the token's renewal too; verify
 * is where an installed skew shows) or when the version cannot be known before the download (say it in package.version).
 */
export async function wantedSidecarVersion(host: HostReader, pkg: SidecarPackage): Promise<{ version: string; from: string } | undefined> {
  if (pkg.from === 'none') return pkg.version ? { version: pkg.version, from: 'sidecar.package.version' } : undefined;
  if (pkg.from === 'dnf' || pkg.from === 'rpm') return wantedRpmVersion(host, pkg);
  const installed = host.live
    ? parseDpkgQuery((await host.query(['dpkg-query', '-W', '-f', '${Package}\t${db:Status-Abbrev}\t${Version}\n', pkg.name])).stdout).get(pkg.name)
    : undefined;
  if (pkg.from === 'deb') {
    // installed from this very .deb already (Package's mark of the sha256 it installed): nothing new
    if (installed?.installed && (await host.readFile(`${INSTALLED_DEBS_DIR}/${pkg.name}.sha256`))?.trim() === pkg.sha256.toLowerCase()) return undefined;
    if (pkg.version) return { version: pkg.version, from: 'sidecar.package.version' };
    // Istio publishes .../releases/<version>/deb/istio-sidecar.deb
    const inUrl =
      /\/releases\/v?(\d+\.\d+\.\d+[^/]*)\//.exec(pkg.url)?.[1] ?? /istio-sidecar[_-]v?(\d+\.\d+\.\d+[^_/]*?)(?:_[a-z0-9]+)?\.deb$/.exec(pkg.url)?.[1];
    return inUrl ? { version: inUrl, from: `the .deb's URL ${pkg.url}` } : undefined;
  }
  if (pkg.version) return installed?.installed && installed.version === pkg.version ? undefined : { version: pkg.version, from: 'sidecar.package.version' };
  // unpinned: an installed package stays as it is; a first install brings apt's candidate
  if (installed?.installed || !host.live) return undefined;
  const candidate = /^\s*Candidate: (\S+)$/m.exec((await host.query(['apt-cache', 'policy', pkg.name])).stdout)?.[1];
  return candidate && candidate !== '(none)' ? { version: candidate, from: `apt's candidate for ${pkg.name}` } : undefined;
}

/** wantedSidecarVersion on an RPM-family host: rpm's view of what is installed; dnf's candidate is not looked up (dnf writes its cache even to read). */
async function wantedRpmVersion(
  host: HostReader,
  pkg: Extract<SidecarPackage, { from: 'dnf' | 'rpm' }>,
): Promise<{ version: string; from: string } | undefined> {
  const installed = await installedPackage(host, pkg.name);
  if (pkg.from === 'rpm') {
    if (installed && (await host.readFile(`${INSTALLED_DEBS_DIR}/${pkg.name}.sha256`))?.trim() === pkg.sha256.toLowerCase()) return undefined;
    if (pkg.version) return { version: pkg.version, from: 'sidecar.package.version' };
    const inUrl = /\/releases\/v?(\d+\.\d+\.\d+[^/]*)\//.exec(pkg.url)?.[1] ?? /istio-sidecar[_-]v?(\d+\.\d+\.\d+)[^/]*\.rpm$/.exec(pkg.url)?.[1];
    return inUrl ? { version: inUrl, from: `the .rpm's URL ${pkg.url}` } : undefined;
  }
  if (pkg.version) return installed && rpmVersionMatches(pkg.version, installed) ? undefined : { version: pkg.version, from: 'sidecar.package.version' };
  return undefined;
}

/** Refuses, before anything changes, a sidecar version istiod cannot serve, naming both versions. */
async function checkVersionSkew(ctx: RecipeContext, a: SidecarAttributes, image?: { version: string; from: string }): Promise<void> {
  const wanted = a.runtime === 'container' ? image : await wantedSidecarVersion(ctx.host, a.package);
  if (!wanted) return;
  const revision = a.workload?.revision ?? '';
  const where = `${a.systemNamespace}${revision ? ` (revision ${revision})` : ''}`;
  const istiod = await cluster(ctx, a.cluster, `istiod's version (for the sidecar's version-skew check; or set sidecar.versionSkew: ignore)`).kept(
    `istiod-version:${a.systemNamespace}:${revision}`,
    (await import('../clients/istio-config.ts')).istiodVersionRead({ namespace: a.systemNamespace, revision }),
  );
  if (istiod === undefined)
    throw new Error(
      `cannot check the sidecar ${wanted.version} (${wanted.from}) against istiod: no istiod version found in ${where}; set sidecar.versionSkew: ignore to install it unchecked`,
    );
  const problem = versionSkewProblem(wanted.version, istiod);
  if (problem)
    throw new Error(
      `${problem} (sidecar from ${wanted.from}, istiod in ${where}); install a sidecar of istiod's minor version or one below, or set sidecar.versionSkew: ignore`,
    );
}
