// Pure iptables text handling, on output captured from the real tools (test/fixtures/iptables).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import {
  chainNameProblem,
  chooseBackend,
  countRuleLines,
  findTag,
  joinArgs,
  jumpTarget,
  parseIptablesSave,
  parseVersionBackend,
  quoteArg,
  renderRestore,
  ruleTag,
  splitArgs,
  withoutTag,
  backendCommands,
  readChainState,
} from '../../resources/iptables/parse.ts';
import { iptablesSpec, iptablesType } from '../../resources/iptables/index.ts';

const fixture = (name: string) => fs.readFileSync(path.join(import.meta.dirname, '../fixtures/iptables', name), 'utf8');

test('iptables-save output is read per table: chains with policies, rules in order, quoted arguments unescaped', (t) => {
  const tables = parseIptablesSave(fixture('nft-drifted.save'));
  t.deepEqual([...tables.keys()], ['filter', 'nat']);
  const nat = tables.get('nat')!;
  t.deepEqual(
    [...nat.chains],
    [
      ['PREROUTING', 'ACCEPT'],
      ['INPUT', 'ACCEPT'],
      ['OUTPUT', 'ACCEPT'],
      ['POSTROUTING', 'ACCEPT'],
      ['DOCKER', '-'],
      ['MESHVM_INBOUND', '-'],
    ],
  );
  t.deepEqual(
    nat.rules.map((r) => r.chain),
    ['PREROUTING', 'PREROUTING', 'PREROUTING', 'PREROUTING', 'OUTPUT', 'POSTROUTING', 'DOCKER', 'MESHVM_INBOUND', 'MESHVM_INBOUND', 'MESHVM_INBOUND'],
  );
  t.deepEqual(nat.rules[5]!.args, ['-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE']);
  const filter = tables.get('filter')!;
  t.deepEqual(filter.rules[0]!.args, ['-p', 'tcp', '-m', 'tcp', '--dport', '22', '-m', 'comment', '--comment', 'ssh "admin" access', '-j', 'ACCEPT']);
  t.deepEqual(filter.rules[1]!.args, ['-j', 'LOG', '--log-prefix', `it's "dropped" \\ `]);
  t.is(filter.rules[1]!.text, String.raw`-j LOG --log-prefix "it\'s \"dropped\" \\ "`, 'the text is kept exactly as printed, for -D');
});

test('nft and legacy print the same state the same way; counters (-c) are dropped', (t) => {
  t.deepEqual(parseIptablesSave(fixture('legacy-drifted.save')), parseIptablesSave(fixture('nft-drifted.save')));
  const plain = parseIptablesSave(fixture('nft-drifted.save')).get('nat');
  t.deepEqual(parseIptablesSave(fixture('nft-drifted-nat-counters.save')).get('nat'), plain);
  t.deepEqual(parseIptablesSave(fixture('legacy-drifted-nat-counters.save')).get('nat'), plain);
  const counted = parseIptablesSave(fixture('nft-filter-counters.save')).get('filter')!;
  t.deepEqual(counted.rules, [
    { chain: 'INPUT', args: ['-i', 'lo', '-p', 'udp', '-m', 'udp', '--dport', '9', '-j', 'ACCEPT'], text: '-i lo -p udp -m udp --dport 9 -j ACCEPT' },
  ]);
});

test('ip6tables-save and an empty namespace parse too; a line that is not iptables-save is refused naming it', (t) => {
  const nat6 = parseIptablesSave(fixture('ip6-nft.save')).get('nat')!;
  t.is(findTag(nat6.rules[0]!.args), 'meshvm:0123456789ab');
  t.deepEqual(parseIptablesSave(fixture('empty-namespace.save')), new Map());
  t.throws(() => parseIptablesSave('*nat\n-I PREROUTING 1 -j X\nCOMMIT\n'), {
    message: /iptables-save line 2: "-I PREROUTING 1 -j X" is not a chain or an appended rule/,
  });
  t.throws(() => parseIptablesSave('-A X -j Y\n'), { message: /line 1: .* is outside a table/ });
});

test('rule lines are counted as the backend heuristic counts them', (t) => {
  t.is(countRuleLines(fixture('nft-drifted.save')), 14);
  t.is(countRuleLines(fixture('empty-namespace.save')), 0);
});

test('arguments are split as iptables-restore splits them', (t) => {
  const cases: [string, string[]][] = [
    ['-p tcp --dport 8080 -j REDIRECT --to-ports 15001', ['-p', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', '15001']],
    ['  -p\ttcp   -j ACCEPT ', ['-p', 'tcp', '-j', 'ACCEPT']],
    ['-j LOG --log-prefix "drop: "', ['-j', 'LOG', '--log-prefix', 'drop: ']],
    [String.raw`--comment "say \"hi\" \\o/"`, ['--comment', String.raw`say "hi" \o/`]],
    ['--comment ""', ['--comment', '']],
    [String.raw`--comment a\b`, ['--comment', String.raw`a\b`]],
    ["--comment it's", ['--comment', "it's"]],
    ['--comment x"y z"w', ['--comment', 'xy z', 'w']],
    ['! -s 10.0.0.0/8 -j RETURN', ['!', '-s', '10.0.0.0/8', '-j', 'RETURN']],
  ];
  for (const [text, args] of cases) t.deepEqual(splitArgs(text), args, text);
  t.throws(() => splitArgs('--comment "open'), { message: 'a double quote is not closed' });
});

test('quoting an argument gives back the same argument, and leaves plain ones bare', (t) => {
  t.is(quoteArg('10.0.0.0/8'), '10.0.0.0/8');
  t.is(quoteArg('127.0.0.1:15053'), '127.0.0.1:15053');
  t.is(quoteArg('!'), '!');
  t.is(quoteArg(''), '""');
  t.is(quoteArg('a b'), '"a b"');
  t.is(quoteArg(String.raw`say "hi" \o/`), String.raw`"say \"hi\" \\o/"`);
  for (const args of [
    ['--comment', `it's "dropped" \\ `],
    ['--log-prefix', ' x\ty '],
    ['-m', 'string', '--string', '"GET /"'],
    ['--comment', ''],
  ]) {
    t.deepEqual(splitArgs(joinArgs(args)), args);
  }
});

test('the tag is a hash of the rule as declared, the same for its string and array forms, and found again after iptables rewrote the rule', (t) => {
  const tag = ruleTag(splitArgs('-p tcp  --dport 8080 -j REDIRECT --to-ports 15001'));
  t.is(tag, ruleTag(['-p', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', '15001']));
  t.regex(tag, /^meshvm:[0-9a-f]{12}$/);
  const saved = parseIptablesSave(fixture('nft-converged.save'))
    .get('nat')!
    .rules.filter((r) => r.chain === 'MESHVM_INBOUND');
  t.is(findTag(saved[0]!.args), tag, 'the tag captured from the real tool');
  t.deepEqual(withoutTag(saved[0]!.args), ['-p', 'tcp', '-m', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', '15001']);
  t.is(findTag(['-m', 'comment', '--comment', 'meshvm:short']), undefined);
  t.is(findTag(['-m', 'comment', '--comment', 'ssh']), undefined);
  t.deepEqual(withoutTag(['-p', 'tcp', '-j', 'ACCEPT']), ['-p', 'tcp', '-j', 'ACCEPT']);
  t.is(jumpTarget(['-p', 'tcp', '-j', 'MESHVM_INBOUND']), 'MESHVM_INBOUND');
  t.is(jumpTarget(['-g', 'X']), 'X');
  t.is(jumpTarget(['-p', 'tcp']), undefined);
});

test('backend choice follows the kubernetes iptables-wrappers heuristic, with the distribution default on a tie', (t) => {
  const cases: [Parameters<typeof chooseBackend>[0], ReturnType<typeof chooseBackend>][] = [
    [{ legacyRules: 10, nftRules: 500 }, 'legacy'],
    [{ legacyRules: 3, nftRules: 2 }, 'legacy'],
    [{ legacyRules: 3, nftRules: 4 }, 'nft'],
    [{ legacyRules: 0, nftRules: 1 }, 'nft'],
    [{ legacyRules: 0, nftRules: 0, systemDefault: 'nft' }, 'nft'],
    [{ legacyRules: 5, nftRules: 5, systemDefault: 'legacy' }, 'legacy'],
    [{ legacyRules: 0, nftRules: 0 }, 'legacy'],
    [{ legacyRules: undefined, nftRules: 0 }, 'nft'],
    [{ legacyRules: 0, nftRules: undefined }, 'legacy'],
    [{ legacyRules: undefined, nftRules: undefined }, 'plain'],
  ];
  for (const [evidence, backend] of cases) t.is(chooseBackend(evidence), backend, JSON.stringify(evidence));
  t.is(parseVersionBackend(fixture('nft-version.txt')), 'nft');
  t.is(parseVersionBackend(fixture('legacy-version.txt')), 'legacy');
  t.is(parseVersionBackend('iptables v1.4.21'), undefined);
  t.deepEqual(backendCommands('nft', false), { save: 'iptables-nft-save', restore: 'iptables-nft-restore' });
  t.deepEqual(backendCommands('legacy', true), { save: 'ip6tables-legacy-save', restore: 'ip6tables-legacy-restore' });
  t.deepEqual(backendCommands('plain', false), { save: 'iptables-save', restore: 'iptables-restore' });
});

test('restore input declares and refills only the owned chain, deletes jumps by their saved text, and adds one', (t) => {
  const { text, lines } = renderRestore({
    table: 'nat',
    chain: 'MESHVM_IN',
    refill: [['-m', 'comment', '--comment', 'meshvm:aaaaaaaaaaaa', '-j', 'LOG', '--log-prefix', 'in: ']],
    deletes: [{ chain: 'PREROUTING', text: '-p tcp -j MESHVM_IN' }],
    jump: { chain: 'PREROUTING', position: 'first', args: ['-m', 'comment', '--comment', 'meshvm:bbbbbbbbbbbb', '-p', 'tcp', '-j', 'MESHVM_IN'] },
  });
  t.is(
    text,
    [
      '*nat',
      ':MESHVM_IN - [0:0]',
      '-D PREROUTING -p tcp -j MESHVM_IN',
      '-A MESHVM_IN -m comment --comment meshvm:aaaaaaaaaaaa -j LOG --log-prefix "in: "',
      '-I PREROUTING 1 -m comment --comment meshvm:bbbbbbbbbbbb -p tcp -j MESHVM_IN',
      'COMMIT',
      '',
    ].join('\n'),
  );
  t.is(lines.length, 6);
  t.is(
    renderRestore({ table: 'filter', chain: 'X', jump: { chain: 'INPUT', position: 'last', args: ['-j', 'X'] } }).text,
    '*filter\n-A INPUT -j X\nCOMMIT\n',
    'a jump alone leaves the chain as it is',
  );
  t.is(
    renderRestore({ table: 'raw', chain: 'X', deletes: [{ chain: 'OUTPUT', text: '-j X' }], removeChain: true }).text,
    '*raw\n:X - [0:0]\n-D OUTPUT -j X\n-X X\nCOMMIT\n',
  );
});

test('chain names are checked as iptables checks them', (t) => {
  t.is(chainNameProblem('MESHVM_INBOUND'), undefined);
  t.is(chainNameProblem('ISTIO_IN_REDIRECT'), undefined);
  t.is(chainNameProblem('a'.repeat(28)), undefined);
  t.regex(chainNameProblem('a'.repeat(29))!, /29 characters; iptables allows at most 28/);
  t.regex(chainNameProblem('PREROUTING')!, /built-in chain/);
  t.regex(chainNameProblem('ACCEPT')!, /name of a target/);
  t.regex(chainNameProblem('-X')!, /must not start with "-"/);
  t.regex(chainNameProblem('MY CHAIN')!, /only letters, digits/);
  t.regex(chainNameProblem('')!, /empty/);
});

const inbound = iptablesSpec.parse({
  table: 'nat',
  chain: 'MESHVM_INBOUND',
  rules: ['-p tcp --dport 8080 -j REDIRECT --to-ports 15001', '-p udp -d 10.0.0.0/8 --dport 53 -j DNAT --to-destination 127.0.0.1:15053'],
  from: { chain: 'PREROUTING', position: 'first', match: '-p tcp' },
});

test('captured converged state has no changes, for both backends', (t) => {
  for (const name of ['nft-converged.save', 'legacy-converged.save']) {
    const state = readChainState(inbound, parseIptablesSave(fixture(name)).get('nat'));
    t.deepEqual(iptablesType.changes(inbound, state), {}, name);
    t.is(state!.jump, 'PREROUTING (first): -p tcp -j MESHVM_INBOUND');
  }
});

test('captured drift is seen: a rule meshvm did not add, a second jump, a foreign rule ahead of the jump', (t) => {
  const state = readChainState(inbound, parseIptablesSave(fixture('nft-drifted.save')).get('nat'))!;
  t.deepEqual(
    state.rules.map((r) => r.tag === undefined),
    [false, false, true],
  );
  t.deepEqual(
    state.jumps.map((j) => [j.chain, j.index, j.tag !== undefined]),
    [
      ['PREROUTING', 2, true],
      ['PREROUTING', 4, false],
    ],
  );
  const changes = iptablesType.changes(inbound, state);
  t.deepEqual(Object.keys(changes), ['rules', 'jump']);
  t.is(iptablesType.describe('rules', changes.rules!), 'update rules: 0 added, 1 removed\n  - -p tcp -m tcp --dport 9999 -j RETURN (not added by meshvm)');
  t.is(
    iptablesType.describe('jump', changes.jump!),
    'fix the jump from PREROUTING (first): -p tcp -j MESHVM_INBOUND (found 2 jumps: PREROUTING rule 2 of 4: -p tcp -j MESHVM_INBOUND; PREROUTING rule 4 of 4: -p tcp -j MESHVM_INBOUND (not added by meshvm))',
  );
});

test('a jump behind a rule meshvm does not own is out of place for "first", in place for "last" only when nothing foreign follows', (t) => {
  const nat = parseIptablesSave(
    '*nat\n:PREROUTING ACCEPT [0:0]\n:X - [0:0]\n-A PREROUTING -p udp -j RETURN\n-A PREROUTING -m comment --comment "' +
      'meshvm:000000000000' +
      '" -j X\nCOMMIT\n',
  ).get('nat');
  const first = iptablesSpec.parse({ table: 'nat', chain: 'X', from: { chain: 'PREROUTING' } });
  t.is(readChainState(first, nat)!.jump, 'PREROUTING rule 2 of 2: -j X (behind rules meshvm does not own)', 'another tag, and behind a foreign rule');
  const last = iptablesSpec.parse({ table: 'nat', chain: 'X', from: { chain: 'PREROUTING', position: 'last' } });
  const tagged = ruleTag(['jump', 'PREROUTING', '-j', 'X']);
  const natTagged = parseIptablesSave(
    `*nat\n:PREROUTING ACCEPT [0:0]\n:X - [0:0]\n-A PREROUTING -p udp -j RETURN\n-A PREROUTING -m comment --comment "${tagged}" -j X\nCOMMIT\n`,
  ).get('nat');
  t.is(readChainState(last, natTagged)!.jump, 'PREROUTING (last): -j X');
  t.is(readChainState(first, natTagged)!.jump, 'PREROUTING rule 2 of 2: -j X (behind rules meshvm does not own)');
});
