// Unit files under arbitrary sections, directives and values: refused at declaration naming the field, or a parser that reads unit files as systemd does (lines, continuations, comments, stripped white space) gives back exactly the directives given; a sample is checked by systemd-analyze verify.
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderUnit, SystemdUnit, systemdUnitSpec } from '../../resources/systemd-unit.ts';
import { convergeTimer } from '../../recipes/converge-timer.ts';
import { RenderError } from '../../engine/values.ts';
import { hostileText, Tally } from '../helpers/hostile.ts';

class Refused extends Error {}

/**
 * [section, key, value] in file order, read as systemd's config_parse reads a unit: a line ending in a backslash is joined
 * to the next (the backslash a space), white space stripped, empty lines and lines beginning with # or ; skipped, a
 * [Section] header, then key=value split at the first "=", both sides stripped.
 */
function parseUnitFile(text: string): [string, string, string][] {
  const out: [string, string, string][] = [];
  let section = '';
  let pending = '';
  const strip = (s: string) => s.replace(/^[ \t\n\r]+|[ \t\n\r]+$/g, '');
  for (const raw of text.split('\n')) {
    let line = pending + raw;
    pending = '';
    if (line.endsWith('\\') && !/^[ \t]*[#;]/.test(line)) {
      pending = `${line.slice(0, -1)} `;
      continue;
    }
    line = strip(line);
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[') && line.endsWith(']')) {
      section = line.slice(1, -1);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`not a directive: ${JSON.stringify(line)}`);
    out.push([section, strip(line.slice(0, eq)), strip(line.slice(eq + 1))]);
  }
  if (pending) throw new Error('a continuation at the end of the file');
  return out;
}

const scalar = fc.oneof({ weight: 5, arbitrary: hostileText(12) }, fc.integer({ min: -5, max: 100000 }), fc.boolean());
const sections = fc.dictionary(
  fc.oneof(fc.constantFrom('Unit', 'Service', 'Install'), hostileText(4)),
  fc.dictionary(fc.oneof(fc.constantFrom('Description', 'ExecStart', 'Environment'), hostileText(4)), fc.oneof(scalar, fc.array(scalar, { maxLength: 3 })), {
    maxKeys: 3,
  }),
  { maxKeys: 3 },
);

const shown = (v: string | number | boolean) => (v === true ? 'yes' : v === false ? 'no' : String(v));

test('arbitrary sections, directives and values: refused, or read back exactly as systemd parses the file', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(sections, (given) => {
      const spec = tally.attempt(() => {
        const parsed = systemdUnitSpec.safeParse({ name: 'x.service', sections: given });
        if (!parsed.success) throw new Refused(parsed.error.message);
        return parsed.data;
      }, Refused);
      if (!spec) return;
      const text = renderUnit(spec.sections!, 'systemd_unit[x.service]');
      const expected = Object.entries(given).flatMap(([section, directives]) =>
        Object.entries(directives).flatMap(([key, v]) => (Array.isArray(v) ? v : [v]).map((item) => [section, key, shown(item)])),
      );
      assert.deepStrictEqual(parseUnitFile(text), expected, text);
    }),
    { numRuns: 400 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});

test("a newline in converge-timer's command is refused naming the attribute, not written as a second directive", (t) => {
  const parsed = convergeTimer.attributes.safeParse({ command: '/usr/local/bin/meshvm converge /x.yaml\nExecStartPost=/bin/sh -c evil' });
  t.false(parsed.success);
  t.regex(
    parsed.error!.issues[0]!.message,
    /"\/usr\/local\/bin\/meshvm converge \/x\.yaml\\nExecStartPost=\/bin\/sh -c evil" cannot be ExecStart=: it has a line break/,
  );
  t.deepEqual(parsed.error!.issues[0]!.path, ['command']);
  t.false(convergeTimer.attributes.safeParse({ command: '/usr/local/bin/meshvm converge \\' }).success, 'a trailing backslash joins the next line');
  t.throws(() => SystemdUnit({ name: 'a.service', sections: { Service: { ExecStart: ' /bin/true' } } }), { message: /Service\.ExecStart.*white space/ });
  t.throws(() => renderUnit({ Service: { ExecStart: '/bin/true\nUser=root' } }, 'systemd_unit[/etc/systemd/system/a.service]'), {
    instanceOf: RenderError,
    message:
      'refusing to write "/bin/true\\nUser=root" into systemd_unit[/etc/systemd/system/a.service] (Service.ExecStart): it has a line break: a directive is one line',
  });
});

const hasAnalyze = (() => {
  try {
    execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

(hasAnalyze ? test : test.skip)(
  `what a directive can carry (quotes, "#", ";", unicode, specifiers) passes systemd-analyze verify${hasAnalyze ? '' : ' (skipped: no systemd-analyze here)'}`,
  (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshvm-unit-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sections = {
      Unit: { Description: `it's "quoted" # not a comment ; é😀 100%% on %H` },
      Service: { Type: 'oneshot', ExecStart: '/bin/true a "b c" \\x20', Environment: ['A=1 # x', 'B=ü'] },
    };
    const text = renderUnit(systemdUnitSpec.parse({ name: 'sample.service', sections }).sections!);
    fs.writeFileSync(path.join(dir, 'sample.service'), text);
    execFileSync('systemd-analyze', ['verify', '--man=no', path.join(dir, 'sample.service')], { stdio: 'pipe' });
    t.deepEqual(
      parseUnitFile(text).map(([, key, value]) => `${key}=${value}`),
      [
        'Description=it\'s "quoted" # not a comment ; é😀 100%% on %H',
        'Type=oneshot',
        'ExecStart=/bin/true a "b c" \\x20',
        'Environment=A=1 # x',
        'Environment=B=ü',
      ],
    );
  },
);
