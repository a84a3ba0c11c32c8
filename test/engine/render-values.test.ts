// engine/values.ts: the value predicates every schema shares, what one line of a file cannot carry, and how a renderer's refusal reads.
import test from 'ava';
import {
  guardLine,
  guardTree,
  isCidr,
  isDnsName,
  isDnsSubdomain,
  isEnvName,
  isIpAddress,
  isLabelKey,
  isLabelValue,
  lineProblem,
  RenderError,
} from '../../engine/values.ts';

test('the predicates, on the values that tell them apart', (t) => {
  t.true(isIpAddress('10.150.0.7') && isIpAddress('fd00::a'));
  t.false(isIpAddress('fe80::1%eth0'), 'a zone names an interface of this machine: never from a cluster');
  t.true(isIpAddress('fe80::1%eth0', 'zone allowed'));
  t.false(isIpAddress('10.0.0.300') || isIpAddress('10.0.0.7\n') || isIpAddress(' 10.0.0.7'));
  t.true(isCidr('10.63.240.0/20') && isCidr('fd00::/108'));
  t.false(isCidr('10.63.240.0/33') || isCidr('fd00::/129') || isCidr('10.0.0.0/8/8') || isCidr('fe80::%eth0/64') || isCidr('10.0.0.0/08 '));
  t.true(isDnsName('istiod.istio-system.svc') && isDnsName('a-1.example'));
  t.false(isDnsName('10.0.0.300'), 'the last label all digits: a broken address, not a name');
  t.false(isDnsName('Istiod') || isDnsName('a..b') || isDnsName('-a') || isDnsName(`${'a'.repeat(64)}.example`));
  t.true(isDnsSubdomain(`${'a'.repeat(70)}.example`), "Kubernetes' object names: labels of any length");
  t.false(isDnsSubdomain('a'.repeat(254)));
  t.true(isLabelKey('topology.istio.io/network') && isLabelKey('app') && isLabelValue('') && isLabelValue('v1.2_x'));
  t.false(isLabelKey('a/b/c') || isLabelKey('/x') || isLabelKey('x/') || isLabelValue('-x') || isLabelValue('a b') || isLabelValue('x'.repeat(64)));
  t.true(isEnvName('ISTIO_META_NETWORK') && isEnvName('_x1'));
  t.false(isEnvName('1X') || isEnvName('A=B') || isEnvName('A B') || isEnvName(''));
});

test('lineProblem names what a line of a file cannot carry', (t) => {
  const cases: [string, string | undefined][] = [
    ['plain text, "quotes", $(x) and é😀', undefined],
    ['a\nb', 'a line break'],
    ['a\rb', 'a line break'],
    ['a\u0085b', 'a line break'],
    ['a\u2028b', 'a line break'],
    ['a\u0000b', 'a NUL'],
    ['a\tb', 'a control character (U+0009)'],
    ['a\u001bb', 'a control character (U+001B)'],
    ['a\u009bb', 'a control character (U+009B)'],
    ['a\ud800b', 'half a surrogate pair (not UTF-8)'],
  ];
  for (const [value, problem] of cases) t.is(lineProblem(value), problem, JSON.stringify(value));
  t.is(lineProblem('a\tb', 'tab'), undefined);
});

test("a renderer's refusal names the file, the field and the value, escaped", (t) => {
  const error = t.throws(() => guardLine('/etc/x.conf', 'key', 'v\nINJECTED=1'), { instanceOf: RenderError });
  t.is(error.message, 'refusing to write "v\\nINJECTED=1" into /etc/x.conf (key): it has a line break');
  t.throws(() => guardLine('/etc/x.conf', 'key', 'x', (v) => (v === 'x' ? 'it is x' : undefined)), { message: /: it is x$/ });
  t.throws(() => guardTree('/etc/istio/config/mesh', { defaultConfig: { list: ['ok', 'not\u0007ok'] } }), {
    message: 'refusing to write "not\\u0007ok" into /etc/istio/config/mesh (defaultConfig.list[1]): it has a control character (U+0007)',
  });
  t.throws(() => guardTree('/f', { 'bad\nkey': 1 }), { message: 'refusing to write "bad\\nkey" into /f ("bad\\nkey"): it has a line break' });
});
