// Recipe aws: Route53 CNAMEs that make the control plane's load-balancer hostnames answer at the names the sidecar looks up.
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { dnsName } from '../engine/validate.ts';
import { Route53Records } from '../resources/route53-record.ts';
import { clusterAttribute } from './cluster.ts';
import { discoverControlPlane, dnsAttributes } from './dns.ts';
import { flow, namespaceName } from './mesh.ts';

export const aws = defineRecipe({
  name: 'aws',
  description: 'On AWS, load balancers have hostnames, not IPs: <name>.<zone> and <name>.<namespace>.<zone> CNAMEs to them (add the zone to dns.search).',
  attributes: z.strictObject({
    flow,
    /** The private hosted zone the VMs resolve in (its name is also a search domain of the resolver: see the dns recipe's search). */
    zone: z.strictObject({ id: z.string(), name: dnsName }),
    systemNamespace: namespaceName.default('istio-system'),
    ttl: z.number().int().min(0).default(60),
    /** Name → LoadBalancer Service overrides (defaults per flow, as in the dns recipe). */
    controlPlaneServices: z.record(dnsName, z.string()).optional(),
    region: z.string().default('us-east-1'),
    /** Tests and VPC endpoints only. */
    endpoint: z.url().optional(),
    /** Where to ask whether the names already answer right (default: the system resolver). */
    dnsServers: z.array(z.string()).optional(),
    waitForSyncSeconds: z.number().int().min(0).default(0),
    cluster: clusterAttribute.optional(),
  }),
  async declare(a, ctx) {
    const controlPlane = await discoverControlPlane(
      ctx,
      dnsAttributes.parse({ flow: a.flow, systemNamespace: a.systemNamespace, controlPlaneServices: a.controlPlaneServices, cluster: a.cluster }),
    );
    const zone = a.zone.name.replace(/\.$/, '');
    const records = controlPlane.flatMap(({ name, address }) =>
      [`${name}.${zone}`, `${name}.${a.systemNamespace}.${zone}`].map((recordName) =>
        isIP(address) !== 0
          ? { name: recordName, type: 'A' as const, ttl: a.ttl, values: [address] }
          : { name: recordName, type: 'CNAME' as const, ttl: a.ttl, values: [address] },
      ),
    );
    return Route53Records({
      zoneId: a.zone.id,
      records,
      region: a.region,
      ...(a.endpoint && { endpoint: a.endpoint }),
      dnsCheck: a.dnsServers ? { servers: a.dnsServers } : {},
      waitForSync: a.waitForSyncSeconds ? { maxSeconds: a.waitForSyncSeconds } : false,
    });
  },
});
