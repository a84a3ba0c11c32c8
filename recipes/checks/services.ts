// The sidecar-services recipe's checks: each service it declared running is active, then the sidecar's interception chains.
import type { Check, CheckContext } from '../../engine/check.ts';
import type { ServiceSpec } from '../../resources/service.ts';
import { interceptionChecks, type SidecarServicesAttributes } from './interception.ts';

export async function servicesChecks(a: SidecarServicesAttributes, context: CheckContext): Promise<Check[]> {
  const checks: Check[] = [];
  for (const d of context.declared) {
    const spec = d.spec as ServiceSpec;
    if (d.type.kind !== 'service' || spec.running !== true) continue;
    if (!context.host.live) {
      checks.push({ check: 'services', ok: true, skipped: true, detail: `${spec.name}: not checked under --root ${context.host.root}` });
      continue;
    }
    const state = (await context.host.query(['systemctl', 'is-active', spec.name])).stdout.trim();
    checks.push({
      check: 'services',
      ok: state === 'active',
      detail: `${spec.name} is ${state || 'unknown'}`,
      ...(state === 'active' ? {} : { fix: `journalctl -u ${spec.name}; systemctl status ${spec.name}` }),
    });
  }
  return [...checks, ...(await interceptionChecks(a, context))];
}
