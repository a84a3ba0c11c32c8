// Recipe interception: checks the sidecar's nat interception rules while istio runs and, when one is missing, has istio restarted to reinstall them.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Execute } from '../resources/execute.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { flow, proxyUser, sidecarServiceSpecs } from './mesh.ts';
import { SidecarService } from './sidecar-services.ts';

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

export const interception = defineRecipe({
  name: 'interception',
  description:
    "The sidecar's nat interception rules checked on every converge; a missing one gets istio restarted (once, with any other restart owed), which reinstalls them.",
  attributes: z.strictObject({ flow, proxyUser }),
  async declare(a, ctx) {
    if (a.flow !== 'istiod')
      throw new Error("the interception check knows the rules of Istio 1.5 and later (the istiod flow); the classic flow's sidecars wrote others");
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
  },
});
