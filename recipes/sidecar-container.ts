// sidecar.runtime container: istio.service runs the Istio proxy image (istio/proxyv2) with podman or docker from Debian's packages,
// on the host network as istio-proxy's uid, its inputs mounted read-only from where meshvm writes them; the image pinned by digest.
import { z } from 'zod';
import type { UndoContext } from '../engine/recipe.ts';
import type { Declaration, DeclareOptions } from '../engine/resource.ts';
import { guestPath } from '../engine/validate.ts';
import type { HostReader } from '../engine/host.ts';
import {
  ContainerImage,
  containerEngine,
  containerImageSpec,
  containerImageType,
  imageReference,
  parseImageReference,
  storeReference,
} from '../resources/container-image.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { Package } from '../resources/package.ts';
import { SystemdUnit, unitPath } from '../resources/systemd-unit.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { shellQuote } from './env-file.ts';
import { ownFiles, purgePackage, removeOwnFiles } from './undo.ts';

export const containerSettings = z.strictObject({
  /** The proxy image, pinned: docker.io/istio/proxyv2:1.24.0@sha256:<digest> (the image with a shell, not -distroless). */
  image: imageReference,
  engine: containerEngine,
  /** An image archive on the VM (podman save, oci-archive) loaded instead of a registry pull. */
  archive: guestPath.optional(),
  /** Accept an image reference without a digest (pulled once, never again: a moving tag does not move here). */
  allowUnpinned: z.boolean().default(false),
  /** apt: the engine from Debian's packages (podman, or docker.io); none: installed some other way (an image). */
  enginePackage: z.enum(['apt', 'none']).default('apt'),
});
export type ContainerSettings = z.output<typeof containerSettings>;

export const CONTAINER_UNIT = 'istio.service';
export const LAUNCHER = '/usr/local/lib/meshvm/istio-container';
/** istio-start.sh's part inside the image, mounted at the same path. */
export const START_SCRIPT = '/usr/local/lib/meshvm/istio-container-start';
export const CONTAINER_NAME = 'istio-proxy';

/**
 * What the container sees of the VM, as host:container:mode. Inputs meshvm writes are read-only: sidecar.env and
 * cluster.env, the mesh config, the root certificate, the istio-token, the start script. Writable: /etc/istio/proxy
 * (the bootstrap the agent writes, as with the package) and /etc/certs, where the agent writes the workload's
 * certificate and key (OUTPUT_CERTS, as istio-start.sh sets it); root-cert.pem is mounted read-only over it.
 */
export const CONTAINER_MOUNTS = [
  `${ENVOY_DIR}:${ENVOY_DIR}:ro`,
  '/etc/istio/config:/etc/istio/config:ro',
  '/etc/istio/proxy:/etc/istio/proxy:rw',
  '/etc/certs:/etc/certs:rw',
  '/etc/certs/root-cert.pem:/etc/certs/root-cert.pem:ro',
  '/var/run/secrets/tokens:/var/run/secrets/tokens:ro',
  `${START_SCRIPT}:${START_SCRIPT}:ro`,
] as const;

/**
 * istio-start.sh (istio/istio tools/packaging/common) inside the proxy image: the environment from sidecar.env then
 * cluster.env (cluster.env wins), then pilot-agent. init: the interception rules cleaned and installed, clean: cleaned
 * (ISTIO_CUSTOM_IP_TABLES=true: neither); run: the proxy, with istio-start.sh's defaults for the service, istiod's address and the certificate paths.
 */
export const START = `#!/bin/sh
# Managed by meshvm: istio-start.sh's part inside the Istio proxy image (sidecar.runtime: container).
set -e
set -a
if [ -r ${ENVOY_DIR}/sidecar.env ]; then . ${ENVOY_DIR}/sidecar.env; fi
if [ -r ${ENVOY_DIR}/cluster.env ]; then . ${ENVOY_DIR}/cluster.env; fi
set +a
bin=\${ISTIO_BIN_BASE:-/usr/local/bin}
case "\${1:-run}" in
  init | clean)
    [ "\${ISTIO_CUSTOM_IP_TABLES:-}" = true ] && exit 0
    "$bin/pilot-agent" istio-clean-iptables
    [ "$1" = init ] && exec "$bin/pilot-agent" istio-iptables
    exit 0 ;;
esac
svc=\${ISTIO_SERVICE:-rawvm}
pilot=\${PILOT_ADDRESS:-istiod.\${ISTIO_SYSTEM_NAMESPACE:-istio-system}.svc:\${ISTIO_PILOT_PORT:-15012}}
export CA_ADDR="\${CA_ADDR:-$pilot}" PROV_CERT="\${PROV_CERT-/etc/certs}" OUTPUT_CERTS="\${OUTPUT_CERTS-/etc/certs}"
export PROXY_CONFIG="\${PROXY_CONFIG:-
serviceCluster: $svc
controlPlaneAuthPolicy: \${ISTIO_CP_AUTH:-MUTUAL_TLS}
discoveryAddress: $pilot
}"
if [ -z "\${ISTIO_SVC_IP:-}" ] && command -v hostname >/dev/null 2>&1; then ISTIO_SVC_IP=$(hostname --all-ip-addresses | cut -d ' ' -f 1); fi
read -r name < /proc/sys/kernel/hostname
export INSTANCE_IP="\${ISTIO_SVC_IP:-}" POD_NAME="\${POD_NAME:-\${name%%.*}}" POD_NAMESPACE="\${ISTIO_NAMESPACE:-default}"
# ISTIO_AGENT_FLAGS is split on spaces, as istio-start.sh splits it
# shellcheck disable=SC2086
exec "$bin/pilot-agent" proxy --serviceCluster="$svc" \${ISTIO_AGENT_FLAGS:-}
`;

export interface ContainerRun {
  engine: 'podman' | 'docker';
  /** The reference the engine runs: name@digest (or name:tag when unpinned). */
  image: string;
  /** The sidecar's nat rules are installed (interception iptables): an init container with NET_ADMIN and NET_RAW does it. */
  interception: boolean;
  /** TPROXY: the proxy itself needs NET_ADMIN and runs as root (as istio-start.sh runs it then). */
  tproxy: boolean;
  proxyUser: string;
}

/** One `engine run` command line (words; "$uid:$gid" is filled in by the launcher from the account when it starts). */
export function runArgv(c: ContainerRun, part: 'init' | 'clean' | 'run'): string[] {
  const rules = part !== 'run';
  const name = rules ? `${CONTAINER_NAME}-${part}` : CONTAINER_NAME;
  const asRoot = rules || c.tproxy;
  const caps = rules ? ['NET_ADMIN', 'NET_RAW'] : c.tproxy ? ['NET_ADMIN'] : [];
  return [
    `/usr/bin/${c.engine}`,
    'run',
    '--rm',
    ...(c.engine === 'podman' ? ['--replace'] : []),
    '--name',
    name,
    '--network',
    'host',
    '--uts',
    'host',
    '--pull',
    'never',
    '--user',
    asRoot ? '0:0' : '$uid:$gid',
    '--cap-drop',
    'ALL',
    ...caps.flatMap((cap) => ['--cap-add', cap]),
    // istio-iptables excludes the proxy's traffic by uid: the host's istio-proxy, not the image's 1337
    ...(rules ? ['--env', 'PROXY_UID=$uid', '--env', 'PROXY_GID=$gid'] : []),
    ...CONTAINER_MOUNTS.flatMap((mount) => ['--volume', mount]),
    '--entrypoint',
    '/bin/sh',
    c.image,
    START_SCRIPT,
    part,
  ];
}

/** A word for the launcher: $uid and $gid expand, everything else is literal. */
function word(w: string): string {
  return w.includes('$uid') ? `"${w}"` : shellQuote(w);
}

/** The launcher istio.service runs: the uid and gid of istio-proxy as the machine has them now, then the engine. */
export function renderLauncher(c: ContainerRun): string {
  const line = (part: 'init' | 'clean' | 'run') => runArgv(c, part).map(word).join(' ');
  return `#!/bin/sh
# Managed by meshvm: istio.service's container (sidecar.runtime: container). init and clean: the interception rules installed or
# removed; run: the proxy; stop: its container removed.
set -eu
uid=$(id -u ${shellQuote(c.proxyUser)})
gid=$(id -g ${shellQuote(c.proxyUser)})
case "\${1:-run}" in
  init) exec ${line('init')} ;;
  clean) exec ${line('clean')} ;;
  run) exec ${line('run')} ;;
  stop) exec /usr/bin/${c.engine} rm --force ${c.engine === 'podman' ? '--ignore ' : ''}${CONTAINER_NAME} ;;
  *) echo "usage: $0 init|clean|run|stop" >&2; exit 2 ;;
esac
`;
}

/** istio.service for the container: the package's unit's part (start after the network, restart on failure), the engine's commands. */
export function containerUnitSections(c: ContainerRun) {
  const docker = c.engine === 'docker';
  return {
    Unit: {
      Description: 'Istio sidecar: the proxy image in a container (meshvm, sidecar.runtime container)',
      Wants: 'network-online.target',
      After: docker ? ['network-online.target', 'docker.service'] : 'network-online.target',
      ...(docker ? { Requires: 'docker.service' } : {}),
    },
    Service: {
      // docker has no --replace: a container of the name left by a crash is removed first
      ...(docker || c.interception ? { ExecStartPre: [...(docker ? [`-${LAUNCHER} stop`] : []), ...(c.interception ? [`${LAUNCHER} init`] : [])] } : {}),
      ExecStart: `${LAUNCHER} run`,
      // as the package's unit: the rules go when the proxy stops
      ExecStopPost: [`-${LAUNCHER} stop`, ...(c.interception ? [`-${LAUNCHER} clean`] : [])],
      KillMode: 'mixed',
      Restart: 'always',
      RestartSec: 10,
      TimeoutStopSec: 30,
    },
    Install: { WantedBy: 'multi-user.target' },
  };
}

/**
 * The proxy version a new image brings, for the version-skew check: its tag's (istio/proxyv2:1.24.0), when the store does
 * not have the image yet (one in use is not refused when istiod moves on: that would stop the token's renewal too).
 */
export async function wantedImageVersion(host: HostReader, settings: ContainerSettings): Promise<{ version: string; from: string } | undefined> {
  const tag = parseImageReference(settings.image)?.tag;
  if (!tag || !/^v?\d+\.\d+/.test(tag)) return undefined;
  const spec = containerImageSpec.safeParse({ reference: settings.image, engine: settings.engine, allowUnpinned: settings.allowUnpinned });
  // a reference the image kind refuses (no digest) is refused by it, naming the reference, before the cluster is asked
  if (!spec.success || (await containerImageType.current(host, spec.data)).present) return undefined;
  return { version: tag.replace(/^v/, ''), from: `the image tag of ${settings.image}` };
}

/** The Debian package of each engine. */
export const ENGINE_PACKAGE = { podman: 'podman', docker: 'docker.io' } as const;

/**
 * The parts runtime container declares instead of the istio-sidecar package: the engine, the image (pulled or loaded only
 * when the store lacks it), the start script, the launcher and istio.service. A new digest changes the image and the
 * launcher: istio restarts once (the notifications are one per target).
 */
export function containerSidecar(
  settings: ContainerSettings,
  o: { interception: 'iptables' | 'none'; tproxy: boolean; proxyUser: string },
  restart: DeclareOptions,
): Declaration {
  const ref = parseImageReference(settings.image);
  const run: ContainerRun = {
    engine: settings.engine,
    image: ref ? storeReference(ref) : settings.image,
    interception: o.interception === 'iptables',
    tproxy: o.tproxy,
    proxyUser: o.proxyUser,
  };
  return [
    settings.enginePackage === 'apt' && Package({ name: ENGINE_PACKAGE[settings.engine] }),
    ContainerImage(
      {
        reference: settings.image,
        engine: settings.engine,
        allowUnpinned: settings.allowUnpinned,
        ...(settings.archive ? { archive: settings.archive } : {}),
      },
      restart,
    ),
    Directory({ path: '/usr/local/lib/meshvm', mode: 0o755, owner: 'root', group: 'root' }),
    // recorded (track), so that offboarding removes them only while they hold what meshvm wrote
    File({ path: START_SCRIPT, mode: 0o755, owner: 'root', group: 'root', content: START, track: true }, restart),
    File({ path: LAUNCHER, mode: 0o755, owner: 'root', group: 'root', content: renderLauncher(run), track: true }, restart),
    SystemdUnit({ name: CONTAINER_UNIT, sections: containerUnitSections(run) }, restart),
  ];
}

/**
 * Offboarding (after sidecar-services stopped and disabled istio, which removes the container): istio.service when it
 * carries meshvm's marker, the launcher and the start script while they hold what meshvm wrote, their directory when
 * emptied; with --purge the image from the store and the engine's package when meshvm installed it.
 */
export async function undoContainerSidecar(settings: ContainerSettings, ctx: UndoContext): Promise<Declaration> {
  const unit = unitPath({ name: CONTAINER_UNIT });
  const ownUnit = (await ownFiles(ctx, [unit])).includes(unit);
  return [
    ownUnit && SystemdUnit({ name: CONTAINER_UNIT, content: '', ensure: 'absent' }),
    await removeOwnFiles(ctx, [LAUNCHER, START_SCRIPT]),
    Directory({ path: '/usr/local/lib/meshvm', ensure: 'absent' }),
    ctx.purge && ContainerImage({ reference: settings.image, engine: settings.engine, allowUnpinned: settings.allowUnpinned, ensure: 'absent' }),
    ctx.purge && settings.enginePackage === 'apt' && (await purgePackage(ctx, ENGINE_PACKAGE[settings.engine])),
  ];
}
