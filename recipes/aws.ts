// Recipe aws: Route53 records in a private zone for the control plane's load balancers (hostnames on AWS), written or only checked.
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { dnsName } from '../engine/validate.ts';
import { Route53Records } from '../resources/route53-record.ts';
import { awsChecks } from './checks/aws.ts';
import { clusterAttribute } from './cluster.ts';
import { CONTROL_PLANE_SERVICES, discoverControlPlane, dnsAttributes } from './dns.ts';
import { flow, namespaceName, workload } from './mesh.ts';

/**
 * What the sidecar dials (istiod[-rev].<ns>.svc) resolves through /etc/hosts, which the certs recipe keeps at the load
 * balancer's current address, IP or resolved hostname alike. These records are for people and other tools: a CNAME
 * under a search domain does not make a three-label .svc name resolve without a search path and ndots in the VM's
 * resolver, which systemd-resolved does not apply to multi-label names at all.
 */
export const awsAttributes = z.strictObject({
  flow,
  /** The private hosted zone the records go in. */
  zone: z.strictObject({ id: z.string(), name: dnsName }),
  /**
   * manage: meshvm UPSERTs the records when their target or TTL differs (route53:ListResourceRecordSets,
   * ChangeResourceRecordSets). check: something else owns them (external-dns): meshvm only reads
   * (route53:ListResourceRecordSets) and fails naming a record that is missing or points elsewhere.
   */
  mode: z.enum(['manage', 'check']).default('manage'),
  systemNamespace: namespaceName.default('istio-system'),
  /** Seconds; default 60 in manage mode. In check mode compared only when given (the owner picks it). */
  ttl: z.number().int().min(0).max(2147483647).optional(),
  /** Name → LoadBalancer Service overrides (defaults per flow, as in the dns recipe). */
  controlPlaneServices: z.record(dnsName, z.string()).optional(),
  /** The workload: its revision names the records of a revisioned control plane (istiod-<rev>). */
  workload: workload.optional(),
  region: z.string().default('us-east-1'),
  /** Tests and VPC endpoints only. */
  endpoint: z.url().optional(),
  /** Where to ask whether the records already answer right (default: the system resolver). */
  dnsServers: z.array(z.string()).optional(),
  waitForSyncSeconds: z.number().int().min(0).default(0),
  cluster: clusterAttribute.optional(),
});
export type AwsAttributes = z.output<typeof awsAttributes>;

export const aws = defineRecipe({
  name: 'aws',
  description: 'Route53 records <name>.<zone> and <name>.<namespace>.<zone> for the control plane load balancers, UPSERTed on target or TTL, or only checked.',
  attributes: awsAttributes,
  checks: awsChecks,
  async declare(a, ctx) {
    const controlPlane = await discoverControlPlane(
      ctx,
      dnsAttributes.parse({ flow: a.flow, systemNamespace: a.systemNamespace, controlPlaneServices: a.controlPlaneServices, cluster: a.cluster }),
    );
    const services: Record<string, string> = a.controlPlaneServices ?? CONTROL_PLANE_SERVICES[a.flow];
    const zone = a.zone.name.replace(/\.$/, '');
    const ttl = a.ttl ?? (a.mode === 'manage' ? 60 : undefined);
    const records = controlPlane.flatMap(({ name, address }) => {
      const target = checkedAddress(address, { namespace: a.systemNamespace, name: services[name] ?? name });
      const shown = recordLabel(name, a.workload?.revision ?? '');
      return [`${shown}.${zone}`, `${shown}.${a.systemNamespace}.${zone}`].map((recordName) => ({
        name: recordName,
        type: isIP(target) === 4 ? ('A' as const) : isIP(target) === 6 ? ('AAAA' as const) : ('CNAME' as const),
        ...(ttl === undefined ? {} : { ttl }),
        values: [target],
      }));
    });
    return Route53Records({
      mode: a.mode,
      zoneId: a.zone.id,
      records,
      region: a.region,
      ...(a.endpoint && { endpoint: a.endpoint }),
      dnsCheck: a.dnsServers ? { servers: a.dnsServers } : {},
      waitForSync: a.waitForSyncSeconds ? { maxSeconds: a.waitForSyncSeconds } : false,
    });
  },
});

/** istiod → istiod-<rev> for a revisioned control plane (the name its sidecars dial); other names as they are. */
export function recordLabel(name: string, revision: string): string {
  return name === 'istiod' && revision && revision !== 'default' ? `istiod-${revision}` : name;
}

/** A load balancer's address from the cluster, an IP or a DNS name, before it reaches a record; else an error naming the object. */
export function checkedAddress(address: string, service: { namespace: string; name: string }): string {
  if (isIP(address) !== 0) return address;
  const name = address.toLowerCase().replace(/\.$/, '');
  if (dnsName.safeParse(name).success) return name;
  throw new Error(
    `Service ${service.namespace}/${service.name}: status.loadBalancer.ingress holds ${JSON.stringify(address)}, neither an IP address nor a DNS name, ` +
      `so no record is written; see kubectl -n ${service.namespace} get service ${service.name} -o yaml`,
  );
}
