// Recipe interception: iptables (the sidecar's nat rules checked, istio restarted once if one is missing) or none (the Tetrate
// guide's VM without iptables: the VM's Sidecar object, /etc/hosts pointing the mesh services at the egress address).
import { z } from 'zod';
import { defineRecipe, type RecipeContext, type UndoContext } from '../engine/recipe.ts';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, managedByMeshvm, readObject } from '../clients/workload-group.ts';
import { dnsName, unique } from '../engine/validate.ts';
import { Execute } from '../resources/execute.ts';
import { ManagedBlock } from '../resources/managed-block.ts';
import { egressAddress, SIDECARS, SidecarObject, sidecarIngress } from '../resources/sidecar-object.ts';
import type { KubeConnect } from '../resources/workload-group.ts';
import { noIptablesChecks } from './checks/interception.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { dnsmasqRestart, flow, proxyUser, sidecarServiceSpecs, workload, type Workload } from './mesh.ts';
import { SidecarService } from './sidecar-services.ts';
import { joinedByMeshvm } from './undo.ts';

/** iptables: istio-start.sh installs Istio's nat rules; none: no rules, the Sidecar object binds the proxy's listeners instead. */
export const interceptionMode = z.enum(['iptables', 'none']).default('iptables');

/**
 * The rules are the sidecar's own: istio-start.sh (pilot-agent istio-iptables) cleans and installs them each time istio
 * starts. meshvm does not own them (a second owner would fight the sidecar's clean-and-install); it checks the rules
 * every Istio version since 1.5 installs in REDIRECT mode, for the ports and ranges of sidecar.env and cluster.env (the
 * latter wins, as istio-start.sh loads it last), in iptables-save's spelling. Exit 0: all there (or nothing to check:
 * ISTIO_CUSTOM_IP_TABLES=true, no iptables); 1: one is missing, named on stderr.
 */
export const CHECK_RULES = String.raw`set -f
dir=$1
command -v iptables-save >/dev/null 2>&1 || exit 0
get() {
  v=$2
  for f in "$dir/sidecar.env" "$dir/cluster.env"; do
    [ -r "$f" ] || continue
    line=$(grep -E "^(export[[:space:]]+)?$1=" "$f" | tail -n 1)
    [ -n "$line" ] && v=$(printf '%s' "$line" | cut -d= -f2-)
  done
  printf '%s' "$v" | tr -d "\"'"
}
[ "$(get ISTIO_CUSTOM_IP_TABLES '')" = true ] && exit 0
uid=$(id -u "$2") || exit 1
nat=$(iptables-save -t nat) || exit 1
missing=0
want() { printf '%s\n' "$nat" | grep -qxF -- "$1" || { echo "missing: $1" >&2; missing=1; }; }
ports=$(get ISTIO_INBOUND_PORTS '')
if [ -n "$ports" ] && [ "$(get ISTIO_INBOUND_INTERCEPTION_MODE REDIRECT)" != TPROXY ]; then
  want '-A PREROUTING -p tcp -j ISTIO_INBOUND'
  if [ "$ports" = '*' ]; then
    want '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT'
    for p in $(get ISTIO_LOCAL_EXCLUDE_PORTS '' | tr , ' '); do want "-A ISTIO_INBOUND -p tcp -m tcp --dport $p -j RETURN"; done
  else
    for p in $(printf '%s' "$ports" | tr , ' '); do want "-A ISTIO_INBOUND -p tcp -m tcp --dport $p -j ISTIO_IN_REDIRECT"; done
  fi
  want '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006'
fi
# Istio up to 1.22 sends tcp only to ISTIO_OUTPUT; 1.23 and later every protocol (istio/istio#50915)
printf '%s\n' "$nat" | grep -qxE -- '-A OUTPUT (-p tcp )?-j ISTIO_OUTPUT' || { echo "missing: -A OUTPUT -p tcp -j ISTIO_OUTPUT (Istio 1.23 and later: -A OUTPUT -j ISTIO_OUTPUT)" >&2; missing=1; }
want "-A ISTIO_OUTPUT -m owner --uid-owner $uid -j RETURN"
for c in $(get ISTIO_SERVICE_CIDR '*' | tr , ' '); do
  case $c in
    '*') want '-A ISTIO_OUTPUT -j ISTIO_REDIRECT' ;;
    *:*) ;;
    */*) want "-A ISTIO_OUTPUT -d $c -j ISTIO_REDIRECT" ;;
    *) want "-A ISTIO_OUTPUT -d $c/32 -j ISTIO_REDIRECT" ;;
  esac
done
want '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001'
exit $missing
`;

/** Exit 0 when the nat or mangle table holds a chain named ISTIO_* (left by a sidecar that ran with iptables). */
export const HAS_ISTIO_CHAINS = `command -v iptables-save >/dev/null 2>&1 || exit 1
for t in nat mangle; do iptables-save -t "$t" 2>/dev/null | grep -q '^:ISTIO_' && exit 0; done
exit 1
`;

/**
 * Removes what a sidecar run with iptables left (istio-start.sh does not clean up when ISTIO_CUSTOM_IP_TABLES is true):
 * per table, the jumps to ISTIO_* chains from other chains, then the ISTIO_* chains, in one iptables-restore --noflush
 * (all or nothing; nothing else in the table is touched).
 */
export const REMOVE_ISTIO_CHAINS = String.raw`set -f
for t in nat mangle; do
  rules=$(iptables-save -t "$t" 2>/dev/null) || continue
  chains=$(printf '%s\n' "$rules" | sed -n 's/^:\(ISTIO_[A-Za-z0-9_]*\) .*/\1/p')
  [ -n "$chains" ] || continue
  {
    echo "*$t"
    printf '%s\n' "$rules" | grep -E -- '^-A [^ ]+ .*-j ISTIO_[A-Za-z0-9_]+( |$)' | grep -v -- '^-A ISTIO_' | sed 's/^-A /-D /'
    for c in $chains; do echo "-F $c"; done
    for c in $chains; do echo "-X $c"; done
    echo COMMIT
  } | iptables-restore --noflush || exit 1
done
`;

const interceptionAttributes = z.strictObject({
  flow,
  proxyUser,
  interception: interceptionMode,
  /** none: the workload this VM is (the Sidecar object is named after it and selects its labels). */
  workload: workload.optional(),
  /** none: the ports the mesh calls the VM on; default the workload's, TCP, each forwarded to the same port on 127.0.0.1. */
  ingress: z.array(sidecarIngress).min(1).optional(),
  /** none: the mesh services the workload calls (full DNS names): /etc/hosts points them at egressAddress. */
  meshHosts: unique(dnsName).default([]),
  /** none: where the proxy's egress listener binds (a loopback address other than 127.0.0.1). */
  egressAddress: egressAddress.default('127.0.0.2'),
  cluster: clusterAttribute.optional(),
});
export type InterceptionAttributes = z.output<typeof interceptionAttributes>;

export const interception = defineRecipe({
  name: 'interception',
  description:
    "iptables: the sidecar's nat interception rules checked on every converge, a missing one gets istio restarted (once). none: the VM's Sidecar object (ingress to the workload's local ports, egress bound to a loopback address), the mesh services in /etc/hosts at that address, leftover ISTIO chains removed.",
  attributes: interceptionAttributes,
  checks: noIptablesChecks,
  async declare(a, ctx) {
    if (a.flow !== 'istiod')
      throw new Error("the interception recipe knows the rules of Istio 1.5 and later (the istiod flow); the classic flow's sidecars wrote others");
    return a.interception === 'none' ? withoutIptables(ctx, a) : iptablesCheck(ctx, a);
  },
  /**
   * none: the Sidecar object when it carries meshvm's managed-by label and the /etc/hosts block (meshvm's markers).
   * Either mode: the ISTIO chains a stopped sidecar left (its ExecStopPost removes them; a crash or a kill does not), on
   * a machine meshvm converged.
   */
  async undo(a, ctx) {
    if (a.flow !== 'istiod') return [];
    return [a.interception === 'none' && (await undoWithoutIptables(ctx, a)), (await joinedByMeshvm(ctx)) && removeLeftoverChains(ctx)];
  },
});

/** Removes the ISTIO_* chains and the jumps into them, when any are there (the running kernel's: only on the live system). */
function removeLeftoverChains(ctx: RecipeContext) {
  return (
    ctx.host.live &&
    Execute({
      name: 'remove leftover ISTIO iptables chains',
      shell: true,
      script: REMOVE_ISTIO_CHAINS,
      onlyIf: ['sh', '-c', HAS_ISTIO_CHAINS],
      timeoutSeconds: 30,
    })
  );
}

async function iptablesCheck(ctx: RecipeContext, a: InterceptionAttributes) {
  // the rules live in the running kernel: nothing to check under --root, and nothing to restart without sidecar-services
  if (!ctx.host.live || !ctx.runlist.recipes.includes('sidecar-services')) return [];
  // istio installs them when it starts: while it is not running (first install, its start queued at boot) none are due
  if ((await ctx.host.query(['systemctl', 'is-active', 'istio.service'])).stdout.trim() !== 'active') return [];
  const istio = sidecarServiceSpecs(a.flow)
    .filter((spec) => spec.name === 'istio')
    .map((spec) => SidecarService(spec));
  // the script travels in the environment, so that the plan and the report name the check in one line, not 50
  return Execute(
    {
      name: 'istio interception rules',
      command: ['true'],
      notIf: ['sh', '-c', 'eval "$MESHVM_CHECK_RULES"', 'check-interception', ENVOY_DIR, a.proxyUser],
      env: { MESHVM_CHECK_RULES: CHECK_RULES },
      timeoutSeconds: 30,
    },
    { notifies: istio },
  );
}

/** The lines of the /etc/hosts block: each mesh service at the egress address. */
export function meshHostsLines(a: Pick<InterceptionAttributes, 'meshHosts' | 'egressAddress'>): string[] {
  return a.meshHosts.map((host) => `${a.egressAddress} ${host}`);
}

/** The ingress ports: the attribute's, else the workload's (TCP, same local port). */
export function ingressPorts(a: Pick<InterceptionAttributes, 'ingress'>, w: Pick<Workload, 'ports'>) {
  const ports = a.ingress ?? w.ports.map((port) => sidecarIngress.parse({ port }));
  if (ports.length === 0)
    throw new Error(
      'interception none needs the ports the mesh calls this VM on: set workload.ports (each forwarded to 127.0.0.1 on the same port) or interception.ingress ([{ port, protocol, localPort }])',
    );
  return ports;
}

function withoutIptables(ctx: RecipeContext, a: InterceptionAttributes) {
  if (!a.workload) throw new Error('interception none needs the "workload" attribute (name, namespace, labels): the Sidecar object is named after it');
  const w = a.workload;
  if (a.meshHosts.length === 0)
    throw new Error(
      'interception none needs meshHosts, the mesh services the workload calls (e.g. [ratings.bookinfo.svc.cluster.local]): without iptables nothing reaches the proxy but these names',
    );
  const connected = cluster(ctx, a.cluster, 'the Sidecar object (interception: none)');
  const connect: KubeConnect = () => connected.kubernetes();
  return [
    SidecarObject({
      name: w.name,
      namespace: w.namespace,
      selector: w.labels,
      ingress: ingressPorts(a, w),
      egressAddress: a.egressAddress,
      hosts: a.meshHosts,
      connect,
    }),
    // dnsmasq answers from /etc/hosts: it restarts when the block changes (when the dns recipe manages it)
    ManagedBlock({ path: '/etc/hosts', name: 'mesh-services', lines: meshHostsLines(a) }, dnsmasqRestart(ctx)),
    removeLeftoverChains(ctx),
  ];
}

/** What withoutIptables made, removed: the Sidecar object only when it is meshvm's (else noted and left), the hosts block. */
async function undoWithoutIptables(ctx: UndoContext, a: InterceptionAttributes) {
  const block = ManagedBlock({ path: '/etc/hosts', name: 'mesh-services', lines: [], ensure: 'absent' }, dnsmasqRestart(ctx));
  if (!a.workload) return [block];
  const w = a.workload;
  const connected = cluster(ctx, a.cluster, 'the Sidecar object (interception: none)');
  const found = await readObject(await connected.kubernetes(), SIDECARS, w.namespace, w.name);
  if (found && !managedByMeshvm(found)) ctx.note(`left Sidecar ${w.namespace}/${w.name}: it does not carry ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`);
  const sidecar =
    found && managedByMeshvm(found) && SidecarObject({ name: w.name, namespace: w.namespace, ensure: 'absent', connect: () => connected.kubernetes() });
  return [sidecar, block];
}
