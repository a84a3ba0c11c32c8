// The resolver's files (/etc/resolv.conf, resolved's drop-in) under arbitrary nameservers, search domains and options: refused at declaration naming the field, or read back exactly (resolv.conf as glibc reads it, the drop-in as systemd reads a unit file).
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { renderResolverFiles, type ResolverStrategy } from '../../resources/resolv-conf/index.ts';
import { parseNameserver, RESOLV_CONF, resolvConfSpec } from '../../resources/resolv-conf/spec.ts';
import { hostileText, ipOrHostile, nameOrHostile, Tally } from '../helpers/hostile.ts';

class Refused extends Error {}

const strategy = (kind: 'file' | 'resolved'): ResolverStrategy => ({
  kind,
  owner: kind === 'file' ? { owner: 'file', evidence: 'a plain file' } : { owner: 'systemd-resolved', via: 'stub', evidence: 'the stub link' },
  dhclient: false,
  notLive: 'a scratch root',
  noSystemd: undefined,
});

/** resolv.conf as glibc's res_init reads it: "#" or ";" first is a comment; a keyword, then words split at blanks. */
function readResolvConf(text: string) {
  const out = { nameservers: [] as string[], search: [] as string[], options: [] as string[] };
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.startsWith(';') || line.trim() === '') continue;
    const [keyword, ...words] = line.split(/[ \t]+/);
    if (keyword === 'nameserver') out.nameservers.push(words[0]!);
    else if (keyword === 'search') out.search = words;
    else if (keyword === 'options') out.options.push(...words);
    else throw new Error(`a line glibc does not know: ${JSON.stringify(line)}`);
  }
  return out;
}

/** The [Resolve] drop-in's DNS= and Domains=, read as systemd reads a unit file (key=value, white space stripped, words split). */
function readResolvedDropIn(text: string) {
  const values: Record<string, string[]> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.startsWith(';') || line.trim() === '' || line === '[Resolve]') continue;
    const eq = line.indexOf('=');
    values[line.slice(0, eq).trim()] = line
      .slice(eq + 1)
      .trim()
      .split(/\s+/);
  }
  return values;
}

const input = fc.record({
  nameservers: fc.array(
    fc.oneof(
      ipOrHostile,
      fc.tuple(fc.ipV4(), fc.oneof(fc.integer({ min: 1, max: 65535 }), hostileText(3))).map(([ip, p]) => `${ip}:${p}`),
    ),
    {
      minLength: 1,
      maxLength: 3,
    },
  ),
  search: fc.array(nameOrHostile, { maxLength: 3 }),
  options: fc.array(fc.oneof(fc.constantFrom('edns0', 'ndots:5', 'rotate', 'timeout:2'), hostileText(4)), { maxLength: 2 }),
  routeDomains: fc.array(nameOrHostile, { maxLength: 2 }),
});

test('arbitrary nameservers, search domains and options: refused, or resolv.conf and the resolved drop-in read back exactly', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(input, (given) => {
      const spec = tally.attempt(() => {
        const parsed = resolvConfSpec.safeParse(given);
        if (!parsed.success) throw new Refused();
        return parsed.data;
      }, Refused);
      if (!spec) return;
      const portless = spec.nameservers.every((n) => parseNameserver(n)!.port === 53);
      if (portless) {
        const file = renderResolverFiles(spec, strategy('file'))[RESOLV_CONF]!;
        assert.deepStrictEqual(readResolvConf(file), { nameservers: spec.nameservers, search: spec.search, options: spec.options }, file);
      }
      const dropIn = Object.values(renderResolverFiles(spec, strategy('resolved')))[0]!;
      const read = readResolvedDropIn(dropIn);
      assert.deepStrictEqual(
        read['DNS']!.map((s) => parseNameserver(s.replace(/^\[(.*)\]$/, '$1'))!.address),
        spec.nameservers.map((n) => parseNameserver(n)!.address),
      );
      assert.deepStrictEqual(read['Domains'] ?? [], [...spec.routeDomains.map((d) => `~${d}`), ...spec.search]);
    }),
    { numRuns: 500 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});
