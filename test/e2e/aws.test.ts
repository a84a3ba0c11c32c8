// The AWS flow end to end, on a booted Debian 12 (systemd as PID 1) with meshvm in its image: the istio-vm-aws runlist, Vault
// by the instance role (AWS IAM login), and an east-west gateway whose load balancer has a hostname, as an AWS ELB does. The
// sidecar dials istiod.istio-system.svc: the certs recipe resolves the hostname each converge and keeps the hosts line at its
// address, so `getent hosts istiod.istio-system.svc` answers in the guest; when the load balancer's address moves, the next
// converge moves the line and nothing else, and the sidecar finds istiod again without a restart.
// Stand-ins (lab.ts, in the guest's namespace): Vault v1 (AWS IAM auth with STS signature checks, KV v2) for Vault and STS,
// the Kubernetes API v1.33 with an Istio 1.24 install for the cluster, the Route53 API 2013-04-01 for Route53 (the records
// go there), a dnsmasq at the DHCP nameserver's address for the VPC's resolver (it answers the load balancer's hostname,
// and the private hosted zone's records once Route53 has them), istiod (test/e2e/istiod.ts) past the VM's NIC, and the
// instance role's credentials (IMDS on EC2) as environment variables.
import test from 'ava';
import { until } from '../helpers/poll.ts';
import { bootBaked, changedRefs, guestPerFile, LAB, labNodeYaml, run, sidecarReady, sidecarStarts, WORKLOAD, type MeshGuest, type RunReport } from './lab.ts';

const ZONE = { id: 'Z0123456789MESHVME2E', name: 'mesh.internal.example.com' };
const LB = 'eastwest-1234.elb.us-east-1.amazonaws.com';
const MOVED = '10.150.0.16';
const ROLE = { role: 'mesh-vm', arn: 'arn:aws:sts::123456789012:assumed-role/mesh-vm/i-0123456789abcdef0' };
const CREDENTIALS = { accessKeyId: 'AKIAMESHVME2ETESTKEY', secretAccessKey: 'meshvm-e2e-instance-role-secret' };
const ENV = {
  AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  AWS_REGION: 'us-east-1',
  AWS_EC2_METADATA_DISABLED: 'true',
};
const RECORDS = [`istiod.${ZONE.name}.`, `istiod.istio-system.${ZONE.name}.`];

const { serial, guest } = await guestPerFile(
  test,
  'the AWS flow with a hostname load balancer',
  'boot a guest with meshvm in its image; its lab with an ELB hostname, Route53 and Vault AWS auth',
  (log) => bootBaked({ log, lab: { eastwestHostname: LB, aws: { zone: ZONE, ...ROLE, ...CREDENTIALS } } }),
  async (mg) => {
    const node = labNodeYaml(mg)
      .replace(/^ {6}auth: .*$/m, `      auth: { method: aws, role: ${ROLE.role} }`)
      .concat(`  zone: { id: ${ZONE.id}, name: ${ZONE.name} }\n`, `  aws: { endpoint: "${mg.lab.ready.route53}" }\n`);
    await mg.guest.writeFile('/etc/meshvm/node.yaml', node, { mode: 0o600 });
    await mg.guest.writeFile('/etc/meshvm/runlist.yaml', await run(mg.guest, ['meshvm', 'runlist', 'istio-vm-aws']));
  },
);

async function converge(m: MeshGuest): Promise<RunReport> {
  const r = await m.guest.exec(['meshvm', 'converge', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 120_000, env: ENV });
  if (r.exitCode !== 0) throw new Error(`converge failed (${r.exitCode}):\n${r.stderr}\n${r.stdout.slice(-3000)}`);
  return JSON.parse(r.stdout) as RunReport;
}

const hostsLine = async (m: MeshGuest) => (await run(m.guest, ['getent', 'hosts', 'istiod.istio-system.svc'])).split(/\s+/)[0];
const readiness = async (m: MeshGuest) =>
  (await m.guest.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:15021/healthz/ready'])).stdout;
const route53Changes = async (m: MeshGuest) => (await m.lab.stats()).route53.calls.filter((c) => c === 'ChangeResourceRecordSets').length;

serial('istio-vm-aws with a hostname load balancer: getent hosts istiod.istio-system.svc answers in the guest, and follows the address', async (t) => {
  const m = guest();
  const g = m.guest;

  // 1. the first converge: Route53 gets the CNAMEs, /etc/hosts the load balancer's address (its hostname resolved)
  const first = await converge(m);
  t.is(first.summary.failed, 0);
  const stats = await m.lab.stats();
  t.deepEqual(
    stats.route53.records
      .filter((r) => r.type === 'CNAME')
      .map((r) => `${r.name} ${r.values?.join(',')} ttl ${r.ttl}`)
      .sort(),
    RECORDS.map((name) => `${name} ${LB} ttl 60`).sort(),
    'the records went to Route53 (the stand-in)',
  );
  t.is(await route53Changes(m), 1, 'one change batch');
  t.regex((await g.readFile('/etc/hosts')) ?? '', new RegExp(`^${LAB.eastwest.replaceAll('.', '\\.')} istiod\\.istio-system\\.svc$`, 'm'));
  t.is(await hostsLine(m), LAB.eastwest, 'getent hosts istiod.istio-system.svc answers the load balancer address');
  await sidecarReady(g);
  t.is((await m.lab.stats()).istiod.at(-1)?.address, LAB.eastwest, 'the sidecar reached istiod through that line');

  // 2. the VPC's resolver answers the private zone's records now that Route53 has them: verify passes as a whole
  await m.lab.upstreamDns({
    hosts: { [LB]: LAB.eastwest },
    cnames: Object.fromEntries(RECORDS.map((name) => [name.replace(/\.$/, ''), { target: LB, ttl: 60 }])),
  });
  const verify = await g.exec(['meshvm', 'verify', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 120_000, env: ENV });
  const checks = JSON.parse(verify.stdout) as { ok: boolean; checks: { check: string; ok: boolean; detail: string; skipped?: boolean }[] };
  t.log(checks.checks.map((c) => `${c.ok ? 'ok' : 'FAILED'} ${c.check}: ${c.detail}`).join('\n'));
  t.is(verify.exitCode, 0, verify.stdout + verify.stderr);
  t.false(
    checks.checks.some((c) => c.skipped),
    'nothing skipped',
  );
  t.deepEqual(
    checks.checks.filter((c) => c.check === 'aws').map((c) => c.detail.replace(/ \(authoritative\)/, '')),
    RECORDS.map((name) => `${name.replace(/\.$/, '')} CNAME answers ${LB}. ttl 60 (through the system resolver)`),
  );
  const again = await converge(m);
  t.deepEqual(changedRefs(again), [], 'converged: nothing to do');
  t.is(await route53Changes(m), 1, 'and no Route53 write');

  // 3. the load balancer's address moves: istiod answers at the new one only, and the hostname resolves to it
  const starts = await sidecarStarts(g);
  await m.lab.moveEastwest(MOVED);
  t.is(await hostsLine(m), LAB.eastwest, 'until the next converge the line still names the old address');
  const lost = Date.now();
  await until(async () => (await readiness(m)) !== '200', { what: 'the sidecar to notice that istiod is gone', timeoutMs: 10_000, intervalMs: 100 });
  t.is(await readiness(m), '503', 'the sidecar has lost istiod: it dials the old address');

  const moved = await converge(m);
  t.deepEqual(changedRefs(moved), ['managed_block[/etc/hosts#istiod]'], 'the hosts line moved, nothing else');
  t.deepEqual(moved.notifications, [], 'nothing restarted: the agent looks the name up again itself');
  t.is(await hostsLine(m), MOVED, 'getent hosts istiod.istio-system.svc answers the new address');
  await sidecarReady(g);
  t.is((await m.lab.stats()).istiod.at(-1)?.address, MOVED, 'the sidecar reconnected to istiod at the new address');
  t.is(await sidecarStarts(g), starts, 'without a restart');
  t.is(await route53Changes(m), 1, 'the CNAMEs name the hostname, which did not change: no Route53 write');
  t.log(`the sidecar was back ${Date.now() - lost} ms after the move (the converge and its reconnect included)`);

  const last = await converge(m);
  t.deepEqual(changedRefs(last), [], 'converged again: nothing to do');
  t.is((await m.lab.stats()).workloadEntries.map((e) => e.name).join(), `${WORKLOAD.namespace}/${WORKLOAD.name}-${LAB.vmAddress}`, 'still one WorkloadEntry');
});
