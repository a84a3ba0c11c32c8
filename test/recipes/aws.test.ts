// The aws recipe through the real CLI: the Route53 API 2013-04-01 stand-in (with an IAM policy) for Route53, the
// Kubernetes API v1.33 and Vault v1 stand-ins for the cluster (an east-west gateway with an AWS-style hostname), and a
// real dnsmasq on loopback answering the private zone authoritatively, as Route53's resolver does.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { checkedAddress, recordLabel } from '../../recipes/aws.ts';
import type { Check } from '../../engine/check.ts';
import { startMeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';
import { callsMatching, startRoute53, type Route53Options, type Route53StandIn } from '../stand-ins/index.ts';
import { startDnsmasq } from '../helpers/dnsmasq.ts';

const ZONE = { id: 'Z0123456789MESHVMAWS', name: 'mesh.internal.example.com' };
const LB = 'eastwest-1234.elb.us-east-1.amazonaws.com';
const NAMES = [`istiod.${ZONE.name}`, `istiod.istio-system.${ZONE.name}`];
const ENV = { AWS_ACCESS_KEY_ID: 'AKIDMESHVMAWS', AWS_SECRET_ACCESS_KEY: 'aws-test-secret-key', AWS_REGION: 'us-east-1' };

/** What DNS answers for the zone: the two CNAMEs to the load balancer (with this TTL), the load balancer's address. */
const answering = (ttl: number, target = LB) => [
  '--host-record=probe.test,127.0.0.9',
  `--host-record=${target},10.150.0.6,${ttl}`,
  ...NAMES.map((n) => `--cname=${n},${target},${ttl}`),
];

async function world(t: ExecutionContext, options: { route53?: Route53Options; ttl?: number; workload?: Record<string, unknown> } = {}) {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root, { hostnames: true });
  const route53 = await startRoute53({ zones: [{ name: ZONE.name, id: ZONE.id }], ...options.route53 });
  t.teardown(() => route53.stop());
  const dns = (await startDnsmasq(t, answering(options.ttl ?? 60))).server;
  const file = await writeRunlist(
    lab.dir,
    'aws.yaml',
    JSON.stringify({
      name: 'aws-test',
      attributes: { flow: 'istiod', cluster: lab.cluster, ...(options.workload ? { workload: options.workload } : {}) },
      recipes: [{ recipe: 'aws', attributes: { zone: ZONE, endpoint: route53.endpoint, dnsServers: [dns] } }],
    }),
  );
  const run = async (command: 'converge' | 'plan' | 'verify', ...extra: string[]) => {
    const result = await meshvm([command, file, '--root', root, '--json', ...extra], { env: ENV });
    return { ...result, report: result.stdout ? JSON.parse(result.stdout) : undefined };
  };
  return { root, lab, route53, dns, file, run };
}

const changeCalls = (r: Route53StandIn) => callsMatching(r.calls, { action: 'ChangeResourceRecordSets' });
const cnames = (r: Route53StandIn) =>
  r
    .records(ZONE.id)
    .filter((x) => x.type === 'CNAME')
    .map((x) => `${x.name} ${x.values?.join(',')} ttl ${x.ttl}`);
const converged = (ttl: number) => NAMES.map((name) => ({ name, type: 'CNAME', ttl, values: [LB] }));

test('converged records answer right in DNS: no Route53 call; --set aws.ttl=120 gives one UPSERT batch, then nothing to do', async (t) => {
  const { route53, run } = await world(t, { route53: { zones: [{ name: ZONE.name, id: ZONE.id, records: converged(60) }] } });
  const quiet = await run('converge');
  t.is(quiet.exitCode, 0, quiet.stderr);
  t.is(quiet.report.summary.changed, 0);
  t.deepEqual(route53.calls, [], 'DNS answered target and TTL authoritatively: Route53 not asked');

  const ttl = await run('converge', '--set', 'aws.ttl=120');
  t.is(ttl.exitCode, 0, ttl.stderr);
  const [entry] = ttl.report.resources;
  t.is(entry.status, 'changed');
  t.deepEqual(entry.changes, [
    `upsert istiod.${ZONE.name}. CNAME ${LB}. ttl 120 (was ${LB}. ttl 60)`,
    `upsert istiod.istio-system.${ZONE.name}. CNAME ${LB}. ttl 120 (was ${LB}. ttl 60)`,
  ]);
  t.is(changeCalls(route53).length, 1, 'one batch for both records');
  t.is(callsMatching(route53.calls, { action: 'ListResourceRecordSets' }).length, 2, 'one list per record DNS showed with the old TTL');
  t.deepEqual(cnames(route53).sort(), [`istiod.istio-system.${ZONE.name}. ${LB} ttl 120`, `istiod.${ZONE.name}. ${LB} ttl 120`]);
  t.deepEqual(ttl.report.apiCalls.route53, 3);

  const again = await run('converge', '--set', 'aws.ttl=120');
  t.is(again.report.summary.changed, 0, 'converged: Route53 holds the TTL (the test DNS still says 60, so Route53 is asked)');
  t.is(changeCalls(route53).length, 1, 'no second batch');
  t.is((await run('plan', '--set', 'aws.ttl=120', '--detailed-exitcode')).exitCode, 0, 'plan: nothing to do');
  const pending = await run('plan', '--set', 'aws.ttl=300', '--detailed-exitcode');
  t.is(pending.exitCode, 2, 'plan: a TTL to change');
  t.is(pending.report.resources[0].changes.length, 2);
  t.is(changeCalls(route53).length, 1, 'plan wrote nothing');
});

test('aws.mode check: records external-dns owns pass with a read-only policy; a missing one fails plan and converge naming it, with 0 writes', async (t) => {
  const owned = [...converged(300)];
  const { route53, run, root } = await world(t, {
    ttl: 300,
    route53: { zones: [{ name: ZONE.name, id: ZONE.id, records: owned }], allowedActions: ['ListResourceRecordSets'] },
  });
  const ok = await run('converge', '--set', 'aws.mode=check');
  t.is(ok.exitCode, 0, ok.stderr);
  t.is(ok.report.summary.changed, 0);

  // external-dns dropped one record: Route53 no longer has it, and DNS (here a dnsmasq that knows only the other) neither
  const zone = route53.zones.get(ZONE.id)!;
  zone.records = zone.records.filter((x) => x.name !== `istiod.istio-system.${ZONE.name}.`);
  const dns = (
    await startDnsmasq(
      t,
      answering(300).filter((line) => !line.includes('istio-system')),
    )
  ).server;
  const before = await snapshot(root);
  for (const command of ['plan', 'converge'] as const) {
    const bad = await run(command, '--set', 'aws.mode=check', '--set', `aws.dnsServers=["${dns}"]`);
    t.is(bad.exitCode, 1, command);
    const [entry] = bad.report.resources;
    t.is(entry.status, 'failed');
    t.regex(
      entry.error,
      new RegExp(
        `mode check: 1 of the 2 record\\(s\\) in hosted zone ${ZONE.id} are not as declared, and meshvm does not write them: istiod\\.istio-system\\.mesh\\.internal\\.example\\.com\\. CNAME is absent, not ${LB.replaceAll('.', '\\.')}\\.`,
      ),
    );
  }
  t.deepEqual(changeCalls(route53), [], 'no write was even attempted');
  const after = await snapshot(root);
  for (const record of ['var/lib/meshvm/last-run.json', 'var/lib/meshvm/status.json']) {
    delete after[record];
    delete before[record];
  }
  t.deepEqual(after, before, "nothing but the run's report and status written on the machine");
});

test('verify: each record answers its target through the resolver; one pointing elsewhere fails naming it', async (t) => {
  const { run, dns } = await world(t);
  const good = await run('verify', '--resolver', dns);
  t.is(good.exitCode, 0, good.stdout + good.stderr);
  const lines = (checks: Check[]) => checks.map((c) => `${c.ok ? 'ok' : 'FAILED'} ${c.check}: ${c.detail}`);
  t.deepEqual(lines(good.report.checks), [
    `ok aws: istiod.${ZONE.name} CNAME answers ${LB}. ttl 60 (authoritative) (through the DNS server ${dns})`,
    `ok aws: istiod.istio-system.${ZONE.name} CNAME answers ${LB}. ttl 60 (authoritative) (through the DNS server ${dns})`,
  ]);

  const elsewhere = (await startDnsmasq(t, answering(60, 'old-lb.elb.us-east-1.amazonaws.com'))).server;
  const bad = await run('verify', '--resolver', elsewhere);
  t.is(bad.exitCode, 1);
  const failed = (bad.report.checks as Check[]).filter((c) => !c.ok);
  t.is(failed.length, 2);
  t.is(failed[0]!.detail, `istiod.${ZONE.name} CNAME answers old-lb.elb.us-east-1.amazonaws.com., not ${LB}. (through the DNS server ${elsewhere})`);
  t.regex(failed[0]!.fix!, /meshvm converge UPSERTs it in hosted zone Z0123456789MESHVMAWS/);
});

test('a revisioned control plane: the records carry the name its sidecars dial (istiod-<rev>)', async (t) => {
  const { run, route53 } = await world(t, { workload: { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', revision: 'canary' } });
  const first = await run('converge');
  t.is(first.exitCode, 0, first.stderr);
  t.deepEqual(cnames(route53).sort(), [`istiod-canary.istio-system.${ZONE.name}. ${LB} ttl 60`, `istiod-canary.${ZONE.name}. ${LB} ttl 60`]);
  t.is(recordLabel('istiod', 'default'), 'istiod');
  t.is(recordLabel('istio-pilot', 'canary'), 'istio-pilot');
});

test('a load-balancer address from the cluster that is neither an IP nor a DNS name is refused naming the Service, before any Route53 call', async (t) => {
  const { lab, run, route53, root } = await world(t);
  lab.kube.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ port: 15012 }] },
    { loadBalancer: { ingress: [{ hostname: 'lb.example.com\nserver=/x/1.2.3.4' }] } },
  );
  const before = await snapshot(root);
  const bad = await run('converge');
  t.is(bad.exitCode, 1);
  // the Kubernetes client refuses it where it reads it; the recipe would too, naming the same object
  t.regex(bad.stderr, /Service istio-system\/istio-eastwestgateway: status\.loadBalancer\.ingress\S*:? .*"lb\.example\.com\\nserver=\/x\/1\.2\.3\.4"/);
  t.deepEqual(route53.calls, []);
  t.deepEqual(await snapshot(root), before);
  t.throws(() => checkedAddress('lb.example.com\nserver=/x/1.2.3.4', { namespace: 'istio-system', name: 'istio-eastwestgateway' }), {
    message:
      'Service istio-system/istio-eastwestgateway: status.loadBalancer.ingress holds "lb.example.com\\nserver=/x/1.2.3.4", neither an IP address nor a DNS name, so no record is written; see kubectl -n istio-system get service istio-eastwestgateway -o yaml',
  });
  t.is(checkedAddress('LB.Example.com.', { namespace: 'n', name: 's' }), 'lb.example.com');
  t.is(checkedAddress('2001:db8::1', { namespace: 'n', name: 's' }), '2001:db8::1');
});
