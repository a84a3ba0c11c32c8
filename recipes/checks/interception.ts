// The sidecar's interception check: the nat chains istio sets up when it starts (ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_REDIRECT).
import type { z } from 'zod';
import type { Check, CheckContext } from '../../engine/check.ts';
import { errorMessage } from '../../engine/errors.ts';
import type { ServiceSpec } from '../../resources/service.ts';
import type { flow } from '../mesh.ts';

/** The sidecar-services attributes ({ flow }), spelled from mesh.ts's schema: a type taken from the recipe it is wired into would be circular. */
export interface SidecarServicesAttributes {
  flow: z.output<typeof flow>;
}

export const ISTIO_NAT_CHAINS = ['ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'] as const;

/**
 * For sidecar-services (in every runlist that runs a sidecar, classic and istiod alike; the interception recipe is istiod's
 * only and optional): when this recipe declared istio.service, its nat chains exist. Only on the live system.
 */
export async function interceptionChecks(_a: SidecarServicesAttributes, context: CheckContext): Promise<Check[]> {
  if (!context.declared.some((d) => d.type.kind === 'service' && (d.spec as ServiceSpec).name === 'istio.service')) return [];
  if (!context.host.live)
    return [{ check: 'interception', ok: true, skipped: true, detail: `not checked under --root ${context.host.root} (the rules live in the running kernel)` }];
  let nat: string;
  try {
    const result = await context.host.query(['iptables-save', '-t', 'nat']);
    if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}: ${result.stderr.trim()}`);
    nat = result.stdout;
  } catch (error) {
    return [
      {
        check: 'interception',
        ok: false,
        detail: `cannot read the nat table (iptables-save -t nat): ${errorMessage(error)}`,
        fix: 'is iptables installed, and does meshvm verify run as root?',
      },
    ];
  }
  const missing = ISTIO_NAT_CHAINS.filter((chain) => !nat.includes(`:${chain} `));
  return [
    {
      check: 'interception',
      ok: missing.length === 0,
      detail: missing.length
        ? `nat chains missing: ${missing.join(', ')}`
        : `the ${ISTIO_NAT_CHAINS.slice(0, -1).join(', ')} and ${ISTIO_NAT_CHAINS.at(-1)} nat chains exist`,
      ...(missing.length ? { fix: 'the istio service sets them up when it starts: systemctl restart istio' } : {}),
    },
  ];
}
