// A lying API server: the Kubernetes stand-in (for the real API server) serves newlines, shell metacharacters and non-IPs in every field meshvm reads; each run is refused naming the object, the field and the value, and writes nothing (the root's tree hash before and after).
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LAB_WORKLOAD, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

type Flow = 'classic' | 'istiod';

const runlist = (lab: MeshLab, flow: Flow) =>
  JSON.stringify(
    flow === 'classic'
      ? {
          name: 'hostile-classic',
          attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster: lab.cluster },
          recipes: [
            { recipe: 'istio-proxy-user' },
            { recipe: 'dns', attributes: { routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none' } },
            { recipe: 'cluster-env' },
            { recipe: 'certs' },
          ],
        }
      : {
          name: 'hostile-istiod',
          attributes: {
            flow: 'istiod',
            workload: LAB_WORKLOAD,
            registration: 'none',
            cluster: lab.cluster,
          },
          recipes: [
            { recipe: 'istio-proxy-user' },
            { recipe: 'dns', attributes: { mode: 'dnsmasq', routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none' } },
            { recipe: 'cluster-env' },
            { recipe: 'certs' },
          ],
        },
  );

const lb = (lab: MeshLab, name: string, entry: Record<string, string>) =>
  lab.kube.objects.setService('istio-system', name, { type: 'LoadBalancer', ports: [{ port: 15012 }] }, { loadBalancer: { ingress: [entry] } });
const mesh = (lab: MeshLab, tree: Record<string, unknown>) => lab.kube.objects.installIstio({ mesh: { trustDomain: 'cluster.local', ...tree } });
const workloadGroup = (lab: MeshLab, spec: Record<string, unknown>, annotations?: Record<string, string>) =>
  lab.kube.objects.put({
    kind: 'WorkloadGroup',
    metadata: { name: 'reviews-vm', namespace: 'vm-ns', ...(annotations && { annotations }) },
    spec: { template: { serviceAccount: 'vm-sa' }, ...spec },
  });

/** Each field meshvm reads from the cluster, a hostile value in it, and the refusal that names the object, the field and the value. */
const CASES: { field: string; flow: Flow; serve: (lab: MeshLab) => void; refused: RegExp }[] = [
  {
    field: 'kube-dns spec.clusterIP (a newline and a dnsmasq line)',
    flow: 'classic',
    serve: (lab) => lab.kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.150.0.7\naddress=/#/6.6.6.6' }),
    refused: /Service kube-system\/kube-dns: spec\.clusterIP: "10\.150\.0\.7\\naddress=\/#\/6\.6\.6\.6" is not an IP address/,
  },
  {
    field: 'kube-dns spec.clusterIP (a name, not an IP)',
    flow: 'classic',
    serve: (lab) => lab.kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: 'kube-dns.example.com' }),
    refused: /Service kube-system\/kube-dns: spec\.clusterIP: "kube-dns\.example\.com" is not an IP address/,
  },
  {
    field: 'a control-plane load balancer ingress[].ip (shell metacharacters)',
    flow: 'classic',
    serve: (lab) => lb(lab, 'istio-pilot-ilb', { ip: '10.150.0.6;$(reboot)' }),
    refused: /Service istio-system\/istio-pilot-ilb: status\.loadBalancer\.ingress\[0\]\.ip: "10\.150\.0\.6;\$\(reboot\)" is not an IP address/,
  },
  {
    field: 'a control-plane load balancer ingress[].hostname (a newline and a dnsmasq option)',
    flow: 'classic',
    serve: (lab) => lb(lab, 'citadel-ilb', { hostname: 'citadel.example.com\nlog-facility=/etc/shadow' }),
    refused:
      /Service istio-system\/citadel-ilb: status\.loadBalancer\.ingress\[0\]\.hostname: "citadel\.example\.com\\nlog-facility=\/etc\/shadow" is not a DNS name/,
  },
  {
    field: 'a control-plane load balancer with a hostname where no aws recipe makes records (it would be left out silently)',
    flow: 'classic',
    serve: (lab) => lb(lab, 'istio-pilot-ilb', { hostname: 'pilot-1234.elb.us-east-1.amazonaws.com' }),
    refused:
      /istio-pilot: the load balancer of Service istio-system\/istio-pilot-ilb answers at "pilot-1234\.elb\.us-east-1\.amazonaws\.com" is a hostname: add the aws recipe/,
  },
  {
    field: 'the service CIDR (ServiceCIDR spec.cidrs, a newline and an env line)',
    flow: 'classic',
    serve: (lab) => lab.kube.objects.put({ kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.63.240.0/20\nISTIO_CP_AUTH=NONE'] } }),
    refused: /ServiceCIDRs \(networking\.k8s\.io\/v1\): spec\.cidrs\[0\]: "10\.63\.240\.0\/20\\nISTIO_CP_AUTH=NONE" is not a CIDR/,
  },
  {
    field: 'the classic Secret data."root-cert.pem" (text before the PEM block)',
    flow: 'classic',
    serve: (lab) =>
      lab.kube.objects.setSecret('vm-ns', 'istio.vm-sa', { 'root-cert.pem': `x\n${lab.rootPem}`, 'cert-chain.pem': lab.chainPem, 'key.pem': lab.keyPem }),
    refused: /Secret vm-ns\/istio\.vm-sa: data\."root-cert\.pem": "x\\n-----BEGIN CERTIFICATE-----.* is not PEM certificates/,
  },
  {
    field: 'the API server URL stored in Vault (http://, so the token would travel in clear)',
    flow: 'classic',
    serve: (lab) =>
      lab.vault.putSecret('secret', 'meshvm/cluster-a', { server: lab.kube.url.replace('https:', 'http:'), 'ca.crt': lab.kube.caPem, token: 'scoped-token' }),
    refused: /the KV v2 secret secret\/data\/meshvm\/cluster-a: server: "http:\/\/127\.0\.0\.1:\d+" is not an https:\/\/ URL of the API server/,
  },
  {
    field: 'the cluster CA stored in Vault (not PEM)',
    flow: 'classic',
    serve: (lab) => lab.vault.putSecret('secret', 'meshvm/cluster-a', { server: lab.kube.url, 'ca.crt': 'insecure-skip-tls-verify', token: 'scoped-token' }),
    refused: /the KV v2 secret secret\/data\/meshvm\/cluster-a: ca\.crt: "insecure-skip-tls-verify" is not PEM certificates/,
  },
  {
    field: 'the token stored in Vault (a newline and a header), its value never shown',
    flow: 'classic',
    serve: (lab) => lab.vault.putSecret('secret', 'meshvm/cluster-a', { server: lab.kube.url, 'ca.crt': lab.kube.caPem, token: 'scoped-token\nX-Evil: 1' }),
    refused: /the KV v2 secret secret\/data\/meshvm\/cluster-a: token: not a bearer token \(.*\); its value is not shown/,
  },
  {
    field: "istiod's address: the east-west gateway's ingress[].ip (a name in the IP field)",
    flow: 'istiod',
    serve: (lab) => lb(lab, 'istio-eastwestgateway', { ip: 'istiod.attacker.example' }),
    refused: /Service istio-system\/istio-eastwestgateway: status\.loadBalancer\.ingress\[0\]\.ip: "istiod\.attacker\.example" is not an IP address/,
  },
  {
    field: 'the mesh config trustDomain (a newline)',
    flow: 'istiod',
    serve: (lab) => mesh(lab, { trustDomain: 'cluster.local\nISTIO_META_CLUSTER_ID=other' }),
    refused: /ConfigMap istio-system\/istio: mesh\.trustDomain: "cluster\.local\\nISTIO_META_CLUSTER_ID=other" is not a trust domain/,
  },
  {
    field: 'the mesh config proxyMetadata key ("=" in it)',
    flow: 'istiod',
    serve: (lab) => mesh(lab, { defaultConfig: { proxyMetadata: { 'A=B': 'x' } } }),
    refused: /ConfigMap istio-system\/istio: mesh\.defaultConfig\.proxyMetadata: "A=B" is not an environment variable name/,
  },
  {
    field: 'the mesh config proxyMetadata value (an escape character)',
    flow: 'istiod',
    serve: (lab) => mesh(lab, { defaultConfig: { proxyMetadata: { GOOD: 'a\u001b[2Jb' } } }),
    refused: /ConfigMap istio-system\/istio: mesh\.defaultConfig\.proxyMetadata\.GOOD: "a\\u001b\[2Jb" is not one line of text/,
  },
  {
    field: 'the mesh config discoveryAddress (backquotes)',
    flow: 'istiod',
    serve: (lab) => mesh(lab, { defaultConfig: { discoveryAddress: 'istiod.istio-system.svc:15012`id`' } }),
    refused: /ConfigMap istio-system\/istio: mesh\.defaultConfig\.discoveryAddress: "istiod\.istio-system\.svc:15012`id`" is not host:port/,
  },
  {
    field: "the injector values' global.network (a space and a newline)",
    flow: 'istiod',
    serve: (lab) => lab.kube.objects.installIstio({ network: 'net 1\nX' }),
    refused: /ConfigMap istio-system\/istio-sidecar-injector: values\.global\.network: "net 1\\nX" is not a label value/,
  },
  {
    field: "the injector values' global.multiCluster.clusterName (shell metacharacters)",
    flow: 'istiod',
    serve: (lab) => lab.kube.objects.installIstio({ clusterName: "c1';reboot;'" }),
    refused: /ConfigMap istio-system\/istio-sidecar-injector: values\.global\.multiCluster\.clusterName: "c1';reboot;'" is not a cluster ID/,
  },
  {
    field: 'the system namespace label topology.istio.io/network (a newline)',
    flow: 'istiod',
    serve: (lab) => lab.kube.objects.setNamespace('istio-system', { 'topology.istio.io/network': 'net1\nISTIO_META_NETWORK=x' }),
    refused: /Namespace istio-system: metadata\.labels\."topology\.istio\.io\/network": "net1\\nISTIO_META_NETWORK=x" is not a label value/,
  },
  {
    field: 'WorkloadGroup spec.template.serviceAccount (a newline)',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, { template: { serviceAccount: 'vm-sa\nSERVICE_ACCOUNT=root' } }),
    refused: /WorkloadGroup vm-ns\/reviews-vm: spec\.template\.serviceAccount: "vm-sa\\nSERVICE_ACCOUNT=root" is not a service account name/,
  },
  {
    field: 'WorkloadGroup spec.template.network (not a label value)',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, { template: { serviceAccount: 'vm-sa', network: '../../net' } }),
    refused: /WorkloadGroup vm-ns\/reviews-vm: spec\.template\.network: "\.\.\/\.\.\/net" is not a label value/,
  },
  {
    field: 'WorkloadGroup spec.template.labels (a value with $())',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, { template: { serviceAccount: 'vm-sa', labels: { app: 'a$(id)' } } }),
    refused: /WorkloadGroup vm-ns\/reviews-vm: spec\.template\.labels\.app: "a\$\(id\)" is not a label value/,
  },
  {
    field: 'WorkloadGroup spec.template.ports (a port name with a newline)',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, { template: { serviceAccount: 'vm-sa', ports: { 'http\nx': 9080 } } }),
    refused: /WorkloadGroup vm-ns\/reviews-vm: spec\.template\.ports: "http\\nx" is not a port name/,
  },
  {
    field: 'WorkloadGroup spec.probe.httpGet.path (a newline)',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, { probe: { httpGet: { path: '/ready\nreadinessProbe: {}', port: 9080 } } }),
    refused: /WorkloadGroup vm-ns\/reviews-vm: spec\.probe\.httpGet\.path: "\/ready\\nreadinessProbe: \{\}" is not one line of text/,
  },
  {
    field: 'WorkloadGroup proxy.istio.io/config annotation (a proxyMetadata value with a newline)',
    flow: 'istiod',
    serve: (lab) => workloadGroup(lab, {}, { 'proxy.istio.io/config': 'proxyMetadata:\n  X: "a\\nISTIO_META_CLUSTER_ID=other"' }),
    refused:
      /WorkloadGroup vm-ns\/reviews-vm: metadata\.annotations\."proxy\.istio\.io\/config"\.proxyMetadata\.X: "a\\nISTIO_META_CLUSTER_ID=other" is not one line of text/,
  },
  {
    field: 'the istio-ca-root-cert ConfigMap data."root-cert.pem" (not PEM)',
    flow: 'istiod',
    serve: (lab) => lab.kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'not a certificate\n' }),
    refused: /ConfigMap vm-ns\/istio-ca-root-cert: data\."root-cert\.pem": "not a certificate\\n" is not PEM certificates/,
  },
];

for (const flow of ['classic', 'istiod'] as const) {
  test(`control: the ${flow} runlist converges against the honest stand-in`, async (t) => {
    const root = await scratchRoot(t);
    const lab = await startMeshLab(t, root);
    const result = await meshvm(['converge', await writeRunlist(lab.dir, `${flow}.yaml`, runlist(lab, flow)), '--root', root]);
    t.is(result.exitCode, 0, result.stderr);
    t.true((await fs.stat(path.join(root, 'var/lib/istio/envoy/cluster.env'))).isFile());
  });
}

for (const c of CASES) {
  test(`a lying API server: ${c.field} is refused naming the object, field and value; nothing is written`, async (t) => {
    const root = await scratchRoot(t);
    const lab = await startMeshLab(t, root);
    c.serve(lab);
    const file = await writeRunlist(lab.dir, `${c.flow}.yaml`, runlist(lab, c.flow));
    const before = await snapshot(root);
    const result = await meshvm(['converge', file, '--root', root]);
    t.is(result.exitCode, 1, result.stdout);
    t.regex(result.stderr, c.refused);
    t.deepEqual(await snapshot(root), before, 'nothing written: the same tree, modes, owners and contents');
    // the value is shown escaped, never as a line of its own
    t.notRegex(result.stderr, /^(address|log-facility|ISTIO_[A-Z_]+|SERVICE_ACCOUNT|readinessProbe)[=:]|X-Evil/m);
  });
}
