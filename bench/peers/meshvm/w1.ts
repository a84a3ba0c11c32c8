// W1, the mesh VM: the files, directories, resolver, hosts line and inbound chain of a mesh-expansion VM, declared one by
// one with the contents Istio's guide gives (as the built-in recipes render them), everything owned by root: Ansible and
// Puppet resolve owners on the host, not in the scratch root. The playbook and the manifest declare the same state.
import { readFileSync } from 'node:fs';
import { defineRecipe, Directory, File, Iptables, ManagedBlock, ResolvConf, z } from 'meshvm';

const CERTS = new URL('../../../examples/demo-certs/', import.meta.url);
const root = { owner: 'root', group: 'root' } as const;

/** Parents first, one by one, as Puppet must (meshvm and Ansible would create missing parents themselves). */
export const W1_DIRS = [
  '/etc',
  '/etc/istio',
  '/etc/istio/proxy',
  '/var',
  '/var/lib',
  '/var/lib/istio',
  '/var/log',
  '/var/log/istio',
  '/var/lib/istio/envoy',
  '/etc/dnsmasq.d',
  '/etc/certs',
];

/** Istio's inbound capture, shortened: ports the sidecar must not see, then the application ports redirected to it. */
export const W1_RULES = [
  '-p tcp --dport 15008 -j RETURN',
  '-p tcp --dport 22 -j RETURN',
  '-p tcp --dport 15090 -j RETURN',
  '-p tcp --dport 27017 -j REDIRECT --to-ports 15006',
  '-p tcp --dport 3306 -j REDIRECT --to-ports 15006',
  '-p tcp --dport 8080 -j REDIRECT --to-ports 15006',
];

const KUBEDNS = `server=/svc.cluster.local/10.150.0.7
address=/istio-mixer/10.150.0.8
address=/istio-pilot/10.150.0.6
address=/istio-ca/10.150.0.9
address=/istio-mixer.istio-system/10.150.0.8
address=/istio-pilot.istio-system/10.150.0.6
address=/istio-ca.istio-system/10.150.0.9
`;

export default defineRecipe({
  name: 'peers-w1',
  attributes: z.strictObject({}),
  declare: () => [
    ...W1_DIRS.map((path) => Directory({ path, mode: 0o755, ...root })),
    File({
      path: '/var/lib/istio/envoy/cluster.env',
      mode: 0o644,
      ...root,
      content: 'ISTIO_SERVICE_CIDR=10.63.240.0/20\nISTIO_SYSTEM_NAMESPACE=istio-system\nISTIO_CP_AUTH=MUTUAL_TLS\n',
    }),
    File({ path: '/var/lib/istio/envoy/sidecar.env', mode: 0o644, ...root, content: 'ISTIO_INBOUND_PORTS=27017,3306,8080\n' }),
    File({ path: '/etc/dnsmasq.d/kubedns', mode: 0o644, ...root, content: KUBEDNS }),
    File({ path: '/etc/certs/root-cert.pem', mode: 0o644, ...root, content: readFileSync(new URL('root-cert.pem', CERTS), 'utf8') }),
    File({ path: '/etc/certs/cert-chain.pem', mode: 0o644, ...root, content: readFileSync(new URL('cert-chain.pem', CERTS), 'utf8') }),
    File({ path: '/etc/certs/key.pem', mode: 0o600, ...root, sensitive: true, content: readFileSync(new URL('key.pem', CERTS), 'utf8') }),
    // in a scratch root nothing else owns the resolver, so ResolvConf writes /etc/resolv.conf itself
    ResolvConf({ nameservers: ['127.0.0.1'], search: ['istio-system.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], options: ['ndots:5'] }),
    ManagedBlock({ path: '/etc/hosts', name: 'mesh', lines: ['10.150.0.6 istio-pilot.istio-system.svc.cluster.local istio-pilot'] }),
    Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', rules: W1_RULES, from: { chain: 'PREROUTING', position: 'first', match: '-p tcp' } }),
  ],
});
