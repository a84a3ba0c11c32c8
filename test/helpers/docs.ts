// The example files of Istio's mesh-expansion docs (0.8: setupMeshEx.sh generateDnsmasq / generateClusterEnv output).

export const DOCS_KUBEDNS = [
  'server=/svc.cluster.local/10.150.0.7',
  'address=/istio-mixer/10.150.0.8',
  'address=/istio-pilot/10.150.0.6',
  'address=/istio-ca/10.150.0.9',
  'address=/istio-mixer.istio-system/10.150.0.8',
  'address=/istio-pilot.istio-system/10.150.0.6',
  'address=/istio-ca.istio-system/10.150.0.9',
  '',
].join('\n');

export const DOCS_CLUSTER_ENV = 'ISTIO_SERVICE_CIDR=10.63.240.0/20\n';

export const DOCS_SIDECAR_ENV = 'ISTIO_INBOUND_PORTS=27017,3306,8080\n';
