// Iptables against the real iptables (nft and legacy), each test inside its own throwaway network namespace.
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { localHost } from '../../engine/host-local.ts';
import type { Host } from '../../engine/host.ts';
import { Iptables } from '../../resources/iptables/index.ts';
import fs from 'node:fs/promises';
import path from 'node:path';
import { changedRefs, converge, convergesOnce, PROJECT, scratchRoot } from '../helpers/scratch.ts';

interface Lab {
  ns: string;
  root: string;
  host: () => Host;
  /** Runs a command inside the namespace; throws on failure. */
  sh: (...argv: string[]) => Promise<string>;
  /** iptables-save of one table (nft unless told), comment lines dropped. */
  save: (table: string, tool?: string) => Promise<string[]>;
}

/** A fresh network namespace (deleted in teardown) and a scratch root for the runner's state. */
async function lab(t: ExecutionContext): Promise<Lab> {
  const ns = `meshvm-ipt-${randomBytes(4).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  t.teardown(() => execa('ip', ['netns', 'del', ns]).then(() => undefined));
  const root = await scratchRoot(t, 'meshvm-ipt-');
  const sh = async (...argv: string[]) => (await execa('ip', ['netns', 'exec', ns, ...argv])).stdout;
  const save = async (table: string, tool = 'iptables-nft-save') => (await sh(tool, '-t', table)).split('\n').filter((l) => l && !l.startsWith('#'));
  return { ns, root, host: () => localHost({ root, netns: ns }), sh, save };
}

/** A host that records the commands resources ask of it. */
function recording(host: Host) {
  const queries: string[][] = [];
  const runs: string[][] = [];
  const wrapped: Host = {
    ...host,
    query: (argv, opts) => (queries.push([...argv]), host.query(argv, opts)),
    run: (argv, opts) => (runs.push([...argv]), host.run(argv, opts)),
  };
  return { host: wrapped, queries, runs };
}

/** The lines of an iptables-save that are not about this chain (its declaration, its rules, jumps into it). */
const outside = (lines: string[], chain: string) =>
  lines.filter((l) => l !== `:${chain} - [0:0]` && !l.startsWith(`-A ${chain} `) && !l.endsWith(`-j ${chain}`));
const ours = (lines: string[], chain: string) => lines.filter((l) => l.startsWith(`-A ${chain} `) || l.endsWith(`-j ${chain}`));

const INBOUND_RULES = [
  '-p tcp --dport 8080 -j REDIRECT --to-ports 15001',
  ['-p', 'udp', '-d', '10.0.0.0/8', '--dport', '53', '-j', 'DNAT', '--to-destination', '127.0.0.1:15053'],
];
const inbound = (
  rules: (string | string[])[] = INBOUND_RULES,
  from: { chain: string; position?: 'first' | 'last'; match?: string } = { chain: 'PREROUTING', match: '-p tcp' },
) => Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', rules, from });

/** Docker-like rules and a chain of another tool, in nat and filter. */
async function seedForeign(lab: Lab, tool = 'iptables-nft') {
  const ipt = (...args: string[]) => lab.sh(tool, '-w', ...args);
  await ipt('-t', 'nat', '-N', 'DOCKER');
  await ipt('-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER');
  await ipt('-t', 'nat', '-A', 'OUTPUT', '!', '-d', '127.0.0.0/8', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER');
  await ipt('-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE');
  await ipt('-t', 'nat', '-A', 'DOCKER', '-i', 'docker0', '-j', 'RETURN');
  await ipt('-t', 'nat', '-N', 'ISTIO_REDIRECT');
  await ipt('-t', 'nat', '-A', 'ISTIO_REDIRECT', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', '15001');
  await ipt('-t', 'filter', '-N', 'DOCKER-USER');
  await ipt('-t', 'filter', '-A', 'FORWARD', '-j', 'DOCKER-USER');
  await ipt('-t', 'filter', '-A', 'DOCKER-USER', '-j', 'RETURN');
  await ipt('-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-m', 'comment', '--comment', 'ssh "admin"', '-j', 'ACCEPT');
}

test('a chain with its rules and its jump converges once, then reports zero changes', async (t) => {
  const l = await lab(t);
  const first = await convergesOnce(t, l.host, () => [inbound()]);
  t.is(first.resources[0]!.ref, 'iptables[nat/MESHVM_INBOUND]');
  t.deepEqual(first.resources[0]!.changes, [
    'create the chain',
    'add 2 rules\n  + -p tcp --dport 8080 -j REDIRECT --to-ports 15001\n  + -p udp -d 10.0.0.0/8 --dport 53 -j DNAT --to-destination 127.0.0.1:15053',
    'add the jump from PREROUTING (first): -p tcp -j MESHVM_INBOUND',
  ]);
  t.deepEqual(ours(await l.save('nat'), 'MESHVM_INBOUND'), [
    '-A PREROUTING -p tcp -m comment --comment "meshvm:d70f05e5095c" -j MESHVM_INBOUND',
    '-A MESHVM_INBOUND -p tcp -m comment --comment "meshvm:1cfcaa3496a2" -m tcp --dport 8080 -j REDIRECT --to-ports 15001',
    '-A MESHVM_INBOUND -d 10.0.0.0/8 -p udp -m comment --comment "meshvm:232aa0a976ba" -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:15053',
  ]);
});

test('plan shows what would change and changes nothing (no command that writes is run)', async (t) => {
  const l = await lab(t);
  await seedForeign(l);
  const before = [await l.save('nat'), await l.save('filter')];
  const { host, runs } = recording(l.host());
  const result = await converge(host, [inbound()], 'plan');
  t.is(result.resources[0]!.status, 'would-change');
  t.deepEqual(result.resources[0]!.fields, ['ensure', 'rules', 'jump']);
  t.deepEqual(runs, []);
  t.deepEqual([await l.save('nat'), await l.save('filter')], before);
});

test('drift inside the chain is repaired: a rule deleted by hand comes back, a rule added by hand goes', async (t) => {
  const l = await lab(t);
  await converge(l.host(), [inbound()]);
  const converged = await l.save('nat');
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-D', 'MESHVM_INBOUND', '1');
  let result = await converge(l.host(), [inbound()]);
  t.deepEqual(result.resources[0]!.fields, ['rules']);
  t.deepEqual(result.resources[0]!.changes, ['update rules: 1 added, 0 removed\n  + -p tcp --dport 8080 -j REDIRECT --to-ports 15001']);
  t.deepEqual(await l.save('nat'), converged);
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-I', 'MESHVM_INBOUND', '2', '-p', 'tcp', '--dport', '9999', '-j', 'RETURN');
  result = await converge(l.host(), [inbound()]);
  t.deepEqual(result.resources[0]!.changes, ['update rules: 0 added, 1 removed\n  - -p tcp -m tcp --dport 9999 -j RETURN (not added by meshvm)']);
  t.deepEqual(await l.save('nat'), converged);
});

test('the jump is repaired: deleted by hand, duplicated by hand, pushed behind a foreign rule', async (t) => {
  const l = await lab(t);
  await converge(l.host(), [inbound()]);
  const converged = await l.save('nat');
  const ipt = (...args: string[]) => l.sh('iptables-nft', '-w', '-t', 'nat', ...args);

  await ipt('-D', 'PREROUTING', '1');
  let result = await converge(l.host(), [inbound()]);
  t.deepEqual(result.resources[0]!.changes, ['add the jump from PREROUTING (first): -p tcp -j MESHVM_INBOUND']);
  t.deepEqual(await l.save('nat'), converged);

  await ipt('-A', 'PREROUTING', '-p', 'tcp', '-j', 'MESHVM_INBOUND');
  await ipt('-A', 'OUTPUT', '-j', 'MESHVM_INBOUND');
  result = await converge(l.host(), [inbound()]);
  t.deepEqual(result.resources[0]!.fields, ['jump']);
  t.regex(
    result.resources[0]!.changes[0]!,
    /^fix the jump from PREROUTING \(first\): -p tcp -j MESHVM_INBOUND \(found 3 jumps: PREROUTING rule 1 of 2: -p tcp -j MESHVM_INBOUND; PREROUTING rule 2 of 2: -p tcp -j MESHVM_INBOUND \(not added by meshvm\); OUTPUT rule 1 of 1: -j MESHVM_INBOUND \(not added by meshvm\)\)$/,
  );
  t.deepEqual(await l.save('nat'), converged, 'exactly one jump again, the chain untouched');

  await ipt('-I', 'PREROUTING', '1', '-p', 'udp', '--dport', '5353', '-j', 'RETURN');
  result = await converge(l.host(), [inbound()]);
  t.regex(result.resources[0]!.changes[0]!, /\(found PREROUTING rule 2 of 2: -p tcp -j MESHVM_INBOUND \(behind rules meshvm does not own\)\)/);
  const after = await l.save('nat');
  t.deepEqual(
    after.filter((l) => l.startsWith('-A PREROUTING')),
    ['-A PREROUTING -p tcp -m comment --comment "meshvm:d70f05e5095c" -j MESHVM_INBOUND', '-A PREROUTING -p udp -m udp --dport 5353 -j RETURN'],
  );
  t.deepEqual(changedRefs(await converge(l.host(), [inbound()])), []);
});

test('"last" keeps the jump behind every rule meshvm does not own', async (t) => {
  const l = await lab(t);
  const declare = () => [inbound(INBOUND_RULES, { chain: 'PREROUTING', position: 'last' })];
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-A', 'PREROUTING', '-p', 'udp', '-j', 'RETURN');
  await convergesOnce(t, l.host, declare);
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-A', 'PREROUTING', '-p', 'icmp', '-j', 'RETURN');
  t.deepEqual(changedRefs(await converge(l.host(), declare())), ['iptables[nat/MESHVM_INBOUND]']);
  const prerouting = (await l.save('nat')).filter((x) => x.startsWith('-A PREROUTING'));
  t.deepEqual(prerouting.slice(0, 2), ['-A PREROUTING -p udp -j RETURN', '-A PREROUTING -p icmp -j RETURN']);
  t.regex(prerouting[2]!, /^-A PREROUTING -m comment --comment "meshvm:[0-9a-f]{12}" -j MESHVM_INBOUND$/);
  t.is(prerouting.length, 3);
});

test('two resources jumping "first" from the same chain do not fight', async (t) => {
  const l = await lab(t);
  await convergesOnce(t, l.host, () => [
    Iptables({ table: 'nat', chain: 'MESHVM_A', rules: ['-p tcp --dport 1 -j RETURN'], from: { chain: 'PREROUTING' } }),
    Iptables({ table: 'nat', chain: 'MESHVM_B', rules: ['-p tcp --dport 2 -j RETURN'], from: { chain: 'PREROUTING' } }),
  ]);
});

test('foreign chains and rules, Docker-like ones in built-in chains too, are untouched byte for byte', async (t) => {
  const l = await lab(t);
  await seedForeign(l);
  const before = { nat: await l.save('nat'), filter: await l.save('filter') };
  await convergesOnce(t, l.host, () => [inbound()]);
  t.deepEqual(outside(await l.save('nat'), 'MESHVM_INBOUND'), before.nat);
  t.deepEqual(await l.save('filter'), before.filter);
  // and after a change of rules, and a repair of the jump
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-D', 'PREROUTING', '1');
  const result = await converge(l.host(), [inbound(INBOUND_RULES.slice(1))]);
  t.deepEqual(result.resources[0]!.fields, ['rules', 'jump']);
  t.deepEqual(outside(await l.save('nat'), 'MESHVM_INBOUND'), before.nat);
  t.deepEqual(await l.save('filter'), before.filter);
  const prerouting = (await l.save('nat')).filter((x) => x.startsWith('-A PREROUTING'));
  t.is(prerouting.length, 2);
  t.regex(prerouting[0]!, /-j MESHVM_INBOUND$/, 'first, ahead of Docker');
});

test('a rule removed from the spec disappears; a changed match replaces the jump', async (t) => {
  const l = await lab(t);
  await converge(l.host(), [inbound()]);
  const result = await converge(l.host(), [inbound([INBOUND_RULES[1]!], { chain: 'PREROUTING', match: '-p udp' })]);
  t.deepEqual(result.resources[0]!.changes, [
    'update rules: 0 added, 1 removed\n  - -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15001',
    'fix the jump from PREROUTING (first): -p udp -j MESHVM_INBOUND (found PREROUTING rule 1 of 1: -p tcp -j MESHVM_INBOUND)',
  ]);
  const lines = ours(await l.save('nat'), 'MESHVM_INBOUND');
  t.is(lines.length, 2);
  t.regex(lines[0]!, /^-A PREROUTING -p udp -m comment --comment "meshvm:[0-9a-f]{12}" -j MESHVM_INBOUND$/);
  t.regex(lines[1]!, /--dport 53 -j DNAT/);
});

test('without "from", meshvm removes only the jumps it added; a jump added by hand stays', async (t) => {
  const l = await lab(t);
  await converge(l.host(), [inbound()]);
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-A', 'OUTPUT', '-j', 'MESHVM_INBOUND');
  const declare = () => [Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', rules: INBOUND_RULES })];
  const result = await converge(l.host(), declare());
  t.deepEqual(result.resources[0]!.changes, ['remove the jump PREROUTING rule 1 of 1: -p tcp -j MESHVM_INBOUND']);
  t.deepEqual(
    (await l.save('nat')).filter((x) => x.endsWith('-j MESHVM_INBOUND')),
    ['-A OUTPUT -j MESHVM_INBOUND'],
  );
  t.deepEqual(changedRefs(await converge(l.host(), declare())), []);
});

test('ensure absent removes the chain and the jumps into it, and nothing else', async (t) => {
  const l = await lab(t);
  await seedForeign(l);
  const before = await l.save('nat');
  await converge(l.host(), [inbound()]);
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-A', 'OUTPUT', '-j', 'MESHVM_INBOUND');
  const first = await convergesOnce(t, l.host, () => [Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', ensure: 'absent' })]);
  t.deepEqual(first.resources[0]!.changes, ['remove the chain and every jump into it from built-in chains']);
  t.deepEqual(await l.save('nat'), before);
});

test('ensure absent is refused, changing nothing, while a chain meshvm does not own still jumps to it', async (t) => {
  const l = await lab(t);
  await converge(l.host(), [inbound()]);
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-N', 'OTHER');
  await l.sh('iptables-nft', '-w', '-t', 'nat', '-A', 'OTHER', '-j', 'MESHVM_INBOUND');
  const before = await l.save('nat');
  const result = await converge(l.host(), [Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', ensure: 'absent' })]);
  t.regex(
    result.resources[0]!.error!,
    /CHAIN_DEL failed \(Device or resource busy\)[\s\S]*another chain still jumps to MESHVM_INBOUND; remove that rule, then run again/,
  );
  t.deepEqual(await l.save('nat'), before);
});

test('1,000 rules converge, then the next run is a no-op that runs no command that writes', async (t) => {
  const l = await lab(t);
  const rules = Array.from({ length: 1000 }, (_, i) => `-p tcp -d 10.${i >> 8}.${i & 255}.1 --dport ${10000 + i} -j REDIRECT --to-ports 15001`);
  const declare = () => [Iptables({ table: 'nat', chain: 'MESHVM_BIG', rules, from: { chain: 'OUTPUT', match: '-p tcp' } })];
  let started = performance.now();
  const first = await converge(l.host(), declare());
  t.log(`first converge ${(performance.now() - started).toFixed(0)} ms`);
  t.false(first.failed, first.resources[0]!.error);
  t.regex(first.resources[0]!.changes[1]!, /^add 1000 rules\n( {2}\+ .*\n){40} {2}\.\.\. 960 more$/);
  t.is((await l.save('nat')).filter((x) => x.startsWith('-A MESHVM_BIG ')).length, 1000);
  const { host, runs } = recording(l.host());
  started = performance.now();
  const second = await converge(host, declare());
  t.log(`no-op converge ${(performance.now() - started).toFixed(0)} ms`);
  t.deepEqual(changedRefs(second), []);
  t.deepEqual(runs, []);
});

test('Iptables resources in one run share one read of the tables', async (t) => {
  const l = await lab(t);
  const declare = () => [
    inbound(),
    Iptables({ table: 'nat', chain: 'MESHVM_OUTBOUND', rules: ['-p tcp --dport 80 -j REDIRECT --to-ports 15001'], from: { chain: 'OUTPUT', match: '-p tcp' } }),
    Iptables({ table: 'filter', chain: 'MESHVM_FILTER', rules: ['-p tcp --dport 15090 -j ACCEPT'], from: { chain: 'INPUT' } }),
  ];
  await converge(l.host(), declare());
  const saves = (queries: string[][]) => queries.filter((argv) => /-save$/.test(argv[0]!)).map((argv) => argv.join(' '));
  const three = recording(l.host());
  t.deepEqual(changedRefs(await converge(three.host, declare())), []);
  const one = recording(l.host());
  await converge(one.host, declare().slice(0, 1));
  t.deepEqual(saves(three.queries), ['iptables-nft-save', 'ip6tables-nft-save', 'iptables-legacy-save', 'ip6tables-legacy-save']);
  t.deepEqual(saves(three.queries), saves(one.queries), 'three resources read what one reads');
  t.deepEqual(three.queries.length, 4, 'and nothing else');
});

test("legacy: a host whose rules are in iptables-legacy gets meshvm's there too", async (t) => {
  const l = await lab(t);
  await seedForeign(l, 'iptables-legacy');
  const before = await l.save('nat', 'iptables-legacy-save');
  await convergesOnce(t, l.host, () => [inbound()]);
  const after = await l.save('nat', 'iptables-legacy-save');
  t.is(ours(after, 'MESHVM_INBOUND').length, 3);
  t.deepEqual(outside(after, 'MESHVM_INBOUND'), before);
  t.false((await l.sh('iptables-nft-save')).includes('MESHVM_INBOUND'), 'nothing written to the nft backend');
});

test("nft: a host with more nft rules than legacy ones gets meshvm's in nft", async (t) => {
  const l = await lab(t);
  await l.sh('iptables-legacy', '-w', '-A', 'INPUT', '-j', 'ACCEPT');
  await l.sh('iptables-nft', '-w', '-A', 'INPUT', '-j', 'ACCEPT');
  await l.sh('iptables-nft', '-w', '-A', 'OUTPUT', '-j', 'ACCEPT');
  await convergesOnce(t, l.host, () => [inbound()]);
  t.is(ours(await l.save('nat'), 'MESHVM_INBOUND').length, 3);
  t.false((await l.sh('iptables-legacy-save')).includes('MESHVM_INBOUND'));
});

test('ipv6 uses ip6tables and leaves the ipv4 tables alone', async (t) => {
  const l = await lab(t);
  const first = await convergesOnce(t, l.host, () => [
    Iptables({
      table: 'nat',
      chain: 'MESHVM_INBOUND',
      ipv6: true,
      rules: ['-p tcp -d ::1 --dport 8080 -j REDIRECT --to-ports 15001'],
      from: { chain: 'PREROUTING', match: '-p tcp' },
    }),
  ]);
  t.is(first.resources[0]!.ref, 'iptables[ipv6/nat/MESHVM_INBOUND]');
  t.is(ours(await l.save('nat', 'ip6tables-nft-save'), 'MESHVM_INBOUND').length, 2);
  t.false((await l.sh('iptables-nft-save')).includes('MESHVM_INBOUND'));
});

test("a rule iptables-restore refuses fails naming the ref, the rule and iptables' words, and changes nothing", async (t) => {
  const l = await lab(t);
  await seedForeign(l);
  await converge(l.host(), [inbound()]);
  const before = [await l.save('nat'), await l.save('filter')];
  const result = await converge(l.host(), [inbound(['-p tcp --dport 8081 -j REDIRECT --to-ports 15001', '-p tcp --dport 99999 -j REDIRECT --to-ports 15001'])]);
  t.true(result.failed);
  const error = result.resources[0]!.error!;
  t.regex(error, /^iptables\[nat\/MESHVM_INBOUND\]: apply failed: `iptables-nft-restore --noflush` refused the change; nothing was changed/);
  t.regex(error, /invalid port\/service `99999' specified/);
  t.regex(error, /line 4 is rules\[1\]: -p tcp --dport 99999 -j REDIRECT --to-ports 15001\n {2}fix that rule in the spec/);
  t.regex(error, /\(declared at test\/resources\/iptables\.test\.ts:\d+\)/);
  t.deepEqual([await l.save('nat'), await l.save('filter')], before);

  const missing = await converge(l.host(), [inbound(['-p tcp -j NO_SUCH_CHAIN'])]);
  t.regex(
    missing.resources[0]!.error!,
    /Chain 'NO_SUCH_CHAIN' does not exist\n[\s\S]*\n {2}rules\[0\] jumps to NO_SUCH_CHAIN, which does not exist yet\n {2}declare the Iptables resource that owns NO_SUCH_CHAIN before this one/,
  );
  t.deepEqual([await l.save('nat'), await l.save('filter')], before);
});

test('bad specs are refused at declaration, naming the ref and the field', (t) => {
  const bad = (spec: unknown) => () => Iptables(spec as Parameters<typeof Iptables>[0]);
  t.throws(bad({ table: 'nat', chain: 'MESHVM_' + 'X'.repeat(22) }), {
    message: /^iptables\[nat\/MESHVM_X+\].*: chain: chain name "MESHVM_X+" is 29 characters; iptables allows at most 28/,
  });
  t.throws(bad({ table: 'nat', chain: 'PREROUTING' }), { message: /iptables\[nat\/PREROUTING\].*chain: PREROUTING is a built-in chain/ });
  t.throws(bad({ chain: 'MY CHAIN' }), { message: /iptables\[filter\/MY CHAIN\].*chain: chain name "MY CHAIN" may hold only letters/ });
  t.throws(bad({ chain: 'DROP' }), { message: /chain: DROP is the name of a target/ });
  t.throws(bad({ table: 'security', chain: 'X' }), { message: /table: Invalid option: expected one of "filter"\|"nat"\|"mangle"\|"raw"/ });
  t.throws(bad({ table: 'raw', chain: 'X', from: { chain: 'INPUT' } }), {
    message: /from\.chain: INPUT is not a built-in chain of the raw table \(one of PREROUTING, OUTPUT\)/,
  });
  t.throws(bad({ chain: 'X', rules: ['-A INPUT -j ACCEPT'] }), { message: /rules\[0\]: "-A" is an iptables command, not part of a rule/ });
  t.throws(bad({ chain: 'X', rules: ['-j ACCEPT', ['-j', 'LOG\n-F']] }), { message: /rules\[1\]: rule arguments must not contain a line break/ });
  t.throws(bad({ chain: 'X', rules: ['-j LOG --log-prefix "open'] }), { message: /rules\[0\]: a double quote is not closed: -j LOG --log-prefix "open$/ });
  t.throws(bad({ chain: 'X', rules: ['-p tcp -j ACCEPT', '-p  tcp  -j ACCEPT'] }), { message: /rules\[1\]: repeats rules\[0\]; list each rule once/ });
  t.throws(bad({ chain: 'X', rules: [''] }), { message: /rules\[0\]: a rule must not be empty/ });
  t.throws(bad({ chain: 'X', from: { chain: 'INPUT', match: '-p tcp -j ACCEPT' } }), { message: /from\.match: the match must not name a target/ });
  t.throws(bad({ chain: 'X', from: { chain: 'INPUT', position: 'middle' } }), { message: /from\.position: Invalid option/ });
  // @ts-expect-error an unknown field is a type error, and refused at run time too
  t.throws(() => Iptables({ chain: 'X', policy: 'DROP' }), { message: /Unrecognized key: "policy"/ });
});

/**
 * A run whose whole process is inside the namespace (as `ip netns exec NS meshvm ...` runs it, no netns option): the
 * commands it asked for, and what changed.
 */
async function runInside(l: Lab): Promise<{ queries: string[]; changed: string[] }> {
  const script = path.join(l.root, 'inside.ts');
  await fs.writeFile(
    script,
    `import { localHost } from ${JSON.stringify(path.join(PROJECT, 'engine/host-local.ts'))};
import { Iptables } from ${JSON.stringify(path.join(PROJECT, 'resources/iptables/index.ts'))};
import { changedRefs, converge } from ${JSON.stringify(path.join(PROJECT, 'test/helpers/scratch.ts'))};
const host = localHost({ root: ${JSON.stringify(l.root)} });
const queries = [];
const recorded = { ...host, query: (argv, opts) => (queries.push(argv.join(' ')), host.query(argv, opts)) };
const result = await converge(recorded, [Iptables({ table: 'nat', chain: 'MESHVM_INBOUND', rules: ['-p tcp --dport 8080 -j REDIRECT --to-ports 15006'], from: { chain: 'PREROUTING' } })]);
console.log(JSON.stringify({ queries, changed: changedRefs(result) }));
`,
  );
  return JSON.parse(await l.sh(process.execPath, script)) as { queries: string[]; changed: string[] };
}

test('inside a namespace without legacy tables, the legacy tools are not run: their dumps would be empty', async (t) => {
  const l = await lab(t);
  t.is((await l.sh('cat', '/proc/net/ip_tables_names', '/proc/net/ip6_tables_names')).trim(), '', 'no legacy table in a new namespace');
  const first = await runInside(l);
  t.deepEqual(first.changed, ['iptables[nat/MESHVM_INBOUND]']);
  t.false(
    first.queries.some((q) => q.includes('legacy')),
    first.queries.join('\n'),
  );
  // a fresh namespace is a tie (no rules anywhere): the distribution's default decides, as when the tools ran
  t.true(first.queries.includes('iptables --version'), first.queries.join('\n'));
  t.true(
    (await l.save('nat')).some((line) => line.startsWith('-A MESHVM_INBOUND')),
    'the chain is in nft',
  );
  const again = await runInside(l);
  t.deepEqual(again.changed, [], 'the second run finds its rules');
  t.deepEqual(again.queries, ['iptables-nft-save', 'ip6tables-nft-save'], 'a no-op reads the two nft dumps and nothing else');
});

test('inside a namespace with a legacy table, the legacy tools are run and their count decides as before', async (t) => {
  const l = await lab(t);
  await l.sh('iptables-legacy', '-w', '-A', 'INPUT', '-j', 'ACCEPT');
  const run = await runInside(l);
  t.true(run.queries.includes('iptables-legacy-save') && run.queries.includes('ip6tables-legacy-save'), run.queries.join('\n'));
  t.deepEqual(run.changed, ['iptables[nat/MESHVM_INBOUND]']);
  t.true(
    (await l.save('nat', 'iptables-legacy-save')).some((line) => line.startsWith('-A MESHVM_INBOUND')),
    'one legacy rule, none in nft: legacy',
  );
  t.false((await l.save('nat')).some((line) => line.includes('MESHVM_INBOUND')));
});
