// The sidecar-services recipe's checks: each service it declared running is active; in the istiod flow, the sidecar's readiness
// (localhost:15021/healthz/ready, as Istio's guide checks it) while istio runs; then the sidecar's interception chains.
import type { Check, CheckContext } from '../../engine/check.ts';
import type { ServiceSpec } from '../../resources/service.ts';
import { interceptionChecks, type SidecarServicesAttributes } from './interception.ts';
import { probeHttp } from './probe.ts';

/** The agent's status port and readiness path (Envoy ready: config received from istiod, listeners up). */
export const READINESS = { port: 15021, path: '/healthz/ready' } as const;

export async function servicesChecks(a: SidecarServicesAttributes, context: CheckContext): Promise<Check[]> {
  const checks: Check[] = [];
  let istioActive = false;
  for (const d of context.declared) {
    const spec = d.spec as ServiceSpec;
    if (d.type.kind !== 'service' || spec.running !== true) continue;
    if (!context.host.live) {
      checks.push({ check: 'services', ok: true, skipped: true, detail: `${spec.name}: not checked under --root ${context.host.root}` });
      continue;
    }
    const state = (await context.host.query(['systemctl', 'is-active', spec.name])).stdout.trim();
    if (spec.name === 'istio.service' || spec.name === 'istio') istioActive = state === 'active';
    checks.push({
      check: 'services',
      ok: state === 'active',
      detail: `${spec.name} is ${state || 'unknown'}`,
      ...(state === 'active' ? {} : { fix: `journalctl -u ${spec.name}; systemctl status ${spec.name}` }),
    });
  }
  // an inactive istio already failed above; its readiness would only repeat it
  if (a.flow === 'istiod' && istioActive) checks.push(await readinessCheck(context));
  return [...checks, ...(await interceptionChecks(a, context))];
}

/** GET localhost:15021/healthz/ready from the machine: 200 when Envoy has its configuration from istiod. */
export async function readinessCheck(context: CheckContext): Promise<Check> {
  const where = `localhost:${READINESS.port}${READINESS.path}`;
  const got = await probeHttp(context.host, '127.0.0.1', READINESS.port, READINESS.path, { timeoutMs: context.timeoutMs });
  if (got.status === 200) return { check: 'sidecar', ok: true, detail: `${where} answers 200: the sidecar is ready` };
  if (got.status !== undefined) {
    return {
      check: 'sidecar',
      ok: false,
      detail: `${where} answers ${got.status}${got.body ? `: ${got.body.split('\n')[0]}` : ''}`,
      fix: 'the agent runs but Envoy is not ready: is istiod reachable (the control plane line) and the token valid? journalctl -u istio; /var/log/istio/istio.err.log',
    };
  }
  return {
    check: 'sidecar',
    ok: false,
    detail: `${where} does not answer: ${got.error}`,
    fix: 'the agent serves it once it starts: systemctl status istio; journalctl -u istio',
  };
}
