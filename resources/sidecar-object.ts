// Sidecar (networking.istio.io/v1) ensured by server-side apply: the VM's proxy without iptables (ingress to the workload's local port, egress bound to a loopback address).
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineResource } from '../engine/resource.ts';
import { dnsName } from '../engine/validate.ts';
import type { KubeObject, ObjectApi } from '../clients/workload-group.ts';
import { dnsLabel, kubeConnect, kubeObjectType, labelMap, objectName, ownedMetadata, port, presence, prune } from './workload-group.ts';

export const SIDECARS: ObjectApi = { group: 'networking.istio.io', version: 'v1', plural: 'sidecars', kind: 'Sidecar' };

/** The protocols Istio accepts on a Sidecar port (its protocol.Parse, less the unsupported ones). */
export const istioProtocol = z.enum(['HTTP', 'HTTPS', 'GRPC', 'GRPC-WEB', 'HTTP2', 'MONGO', 'MYSQL', 'REDIS', 'TCP', 'TLS', 'UDP']);

/**
 * The address the egress listener binds to: a 127.0.0.0/8 address other than 127.0.0.1, where the workload's own ports
 * are (the ingress listeners' defaultEndpoint), so the two never claim the same address and port.
 */
export const egressAddress = z.string().superRefine((v, ctx) => {
  if (isIP(v) !== 4 || !v.startsWith('127.') || v === '127.0.0.1')
    ctx.addIssue({
      code: 'custom',
      message: `not an egress address: ${JSON.stringify(v)} (a loopback IPv4 address other than 127.0.0.1, which holds the workload's own ports; e.g. 127.0.0.2)`,
    });
});

/** An egress host as the Sidecar takes it: namespace/dnsName, here always "*" (any namespace) and a full name. */
export const egressHost = (fqdn: string): string => `*/${fqdn}`;

export const sidecarIngress = z.strictObject({
  /** The port the mesh calls the VM on (the proxy listens on it at the VM's address). */
  port,
  protocol: istioProtocol.default('TCP'),
  /** The port name (default port-<number>, as the registration names the workload's ports). */
  name: dnsLabel.optional(),
  /** Where the workload listens, on 127.0.0.1 (default the same number). */
  localPort: port.optional(),
});
export type SidecarIngress = z.output<typeof sidecarIngress>;

export const sidecarObjectSpec = z
  .strictObject({
    name: objectName,
    namespace: dnsLabel,
    ensure: presence,
    /** spec.workloadSelector.labels: the VM's labels. Never empty: a Sidecar without a selector would apply to the whole namespace. */
    selector: labelMap.default({}),
    ingress: z.array(sidecarIngress).default([]),
    egressAddress: egressAddress.default('127.0.0.2'),
    /** The mesh services the workload calls (full DNS names); the egress listener imports only these. */
    hosts: z.array(dnsName).default([]),
    objectLabels: labelMap.default({}),
    connect: kubeConnect,
  })
  // what the object must say when it is applied (deleting it needs only its name)
  .superRefine((spec, ctx) => {
    if (spec.ensure === 'absent') return;
    const problem = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (Object.keys(spec.selector).length === 0)
      problem('selector', 'a Sidecar for one VM selects it by at least one label (workload.labels, e.g. app: reviews)');
    if (spec.ingress.length === 0) problem('ingress', "the Sidecar needs at least one ingress port (the workload's ports)");
    if (spec.hosts.length === 0) problem('hosts', 'give the mesh services the workload calls (meshHosts: [ratings.bookinfo.svc.cluster.local])');
  });
export type SidecarObjectSpec = z.output<typeof sidecarObjectSpec>;

/**
 * Istio's Sidecar for a VM without iptables (Istio's "sidecar without iptables" example, the Tetrate guide): each ingress
 * port forwarded to 127.0.0.1:<localPort>, one egress listener on the loopback address for the services named, nothing
 * captured.
 */
export function renderSidecarObject(spec: SidecarObjectSpec): KubeObject {
  return prune({
    metadata: ownedMetadata(spec, spec.objectLabels),
    spec: {
      workloadSelector: { labels: spec.selector },
      ingress: spec.ingress.map((i) => ({
        port: { number: i.port, protocol: i.protocol, name: i.name ?? `port-${i.port}` },
        defaultEndpoint: `127.0.0.1:${i.localPort ?? i.port}`,
        captureMode: 'NONE',
      })),
      egress: [{ bind: spec.egressAddress, captureMode: 'NONE', hosts: spec.hosts.map(egressHost) }],
    },
  });
}

export const sidecarObjectType = kubeObjectType({ kind: 'istio_sidecar', api: SIDECARS, schema: sidecarObjectSpec, render: renderSidecarObject });
export const SidecarObject = defineResource(sidecarObjectType);
