// Recipe dns: /etc/dnsmasq.d/kubedns: cluster names forwarded to the cluster DNS, control-plane names answered locally.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { dnsName, guestPath, ipAddress } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';

export const controlPlaneEntry = z.strictObject({ name: dnsName, address: ipAddress });

export const dns = defineRecipe({
  name: 'dns',
  description: 'dnsmasq drop-in (setupMeshEx.sh generateDnsmasq): server= for the cluster domain, address= for the control plane.',
  attributes: z.strictObject({
    clusterDns: ipAddress,
    clusterDomain: dnsName.default('svc.cluster.local'),
    /** Control-plane names and the addresses they answer with; each also gets a ".<systemNamespace>" twin. */
    controlPlane: z.array(controlPlaneEntry).default([]),
    systemNamespace: dnsName.default('istio-system'),
    configFile: guestPath.default('/etc/dnsmasq.d/kubedns'),
  }),
  declare: (a) => [
    Directory({ path: a.configFile.slice(0, a.configFile.lastIndexOf('/')) || '/', mode: 0o755 }),
    File({ path: a.configFile, mode: 0o644, owner: 'root', group: 'root', content: renderKubedns(a) }),
  ],
});

/** The file's lines in the order Istio's docs show them: server=, short names, then the namespaced names. */
export function renderKubedns(a: { clusterDns: string; clusterDomain: string; controlPlane: { name: string; address: string }[]; systemNamespace: string }): string {
  const lines = [`server=/${a.clusterDomain}/${a.clusterDns}`];
  for (const { name, address } of a.controlPlane) lines.push(`address=/${name}/${address}`);
  for (const { name, address } of a.controlPlane) lines.push(`address=/${name}.${a.systemNamespace}/${address}`);
  return lines.join('\n') + '\n';
}
