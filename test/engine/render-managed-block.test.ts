// ManagedBlock (/etc/hosts and other files meshvm shares) under arbitrary lines and comment leaders: refused at declaration naming the field, or the block reads back exactly, a second render changes nothing, and the text around it stays byte for byte.
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { findBlock, managedBlockSpec, renderWithBlock } from '../../resources/managed-block.ts';
import { ManagedBlock } from '../../resources/managed-block.ts';
import { RenderError } from '../../engine/values.ts';
import { hostileText, Tally } from '../helpers/hostile.ts';
import { convergesOnce, scratchRoot, seed } from '../helpers/scratch.ts';

class Refused extends Error {}

/** The spec, or Refused when the schema refuses it (as a declaration would). */
function specOf(input: unknown) {
  const parsed = managedBlockSpec.safeParse(input);
  if (!parsed.success) throw new Refused(parsed.error.message);
  return parsed.data;
}

// the file's own text: lines that are not markers (meshvm does not own them; a marker there is the file's problem)
const otherText = fc
  .array(
    fc.stringMatching(/^[^\n]{0,20}$/).filter((l) => !/(BEGIN|END) meshvm/.test(l)),
    { maxLength: 4 },
  )
  .map((lines) => lines.join('\n'));

const input = fc
  .record({ name: fc.oneof(fc.constant('istiod'), hostileText(4)), comment: fc.oneof(fc.constant('#'), fc.constant('//'), hostileText(3)) })
  .chain(({ name, comment }) => {
    // a line may be this block's marker, another block's, or a marker with the text around it
    const marker = fc.constantFrom(
      `${comment} BEGIN meshvm ${name}`,
      `${comment} END meshvm ${name}`,
      `${comment} END meshvm other`,
      `x ${comment} END meshvm ${name}`,
    );
    const line = fc.oneof({ weight: 4, arbitrary: hostileText(10) }, { weight: 1, arbitrary: marker });
    return fc.record({ path: fc.constant('/etc/hosts'), name: fc.constant(name), comment: fc.constant(comment), lines: fc.array(line, { maxLength: 4 }) });
  });

test('arbitrary lines and comment: refused, or the block reads back exactly, renders once, and leaves the rest as it was', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(input, otherText, (given, text) => {
      const spec = tally.attempt(() => specOf(given), Refused);
      if (!spec) return;
      const once = renderWithBlock(text, spec);
      const begin = `${spec.comment} BEGIN meshvm ${spec.name}`;
      const end = `${spec.comment} END meshvm ${spec.name}`;
      assert.deepStrictEqual(findBlock(once, begin, end)?.lines, spec.lines);
      assert.strictEqual(renderWithBlock(once, spec), once, 'a second render is the same text');
      const removed = renderWithBlock(once, { ...spec, ensure: 'absent' });
      assert.strictEqual(removed, text === '' || text.endsWith('\n') ? text : `${text}\n`, 'removing the block gives the text back');
    }),
    { numRuns: 400 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});

test('a line or comment that is a marker or has a line break is refused at declaration naming the field and the value', (t) => {
  t.throws(() => ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines: ['10.0.0.1 istiod', '# END meshvm istiod'] }), {
    message: /lines\[1\]: "# END meshvm istiod": it reads as a block marker/,
  });
  t.throws(() => ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines: ['10.0.0.1 a\n6.6.6.6 b'] }), {
    message: /lines\[0\]: "10\.0\.0\.1 a\\n6\.6\.6\.6 b": it has a line break/,
  });
  t.throws(() => ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines: [], comment: '#\n' }), { message: /comment: "#\\n": it has a line break/ });
  // the render refuses on its own too (a spec that did not come through the schema)
  const spec = { ...managedBlockSpec.parse({ path: '/etc/hosts', lines: [] }), lines: ['x\ry'] };
  t.throws(() => renderWithBlock('', spec), { instanceOf: RenderError, message: /into managed_block\[\/etc\/hosts#meshvm\] \(lines\[0\]\)/ });
});

test('lines with tabs, unicode and comment characters converge once in /etc/hosts', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/hosts': '127.0.0.1\tlocalhost\n' });
  const lines = ['10.0.0.1\tistiod.istio-system.svc # the east-west gateway', 'fd00::1 ünïcödé.example'];
  await convergesOnce(t, root, () => [ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines })]);
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(`${root}/etc/hosts`, 'utf8');
  t.deepEqual(findBlock(text, '# BEGIN meshvm istiod', '# END meshvm istiod')?.lines, lines);
  t.true(text.startsWith('127.0.0.1\tlocalhost\n'));
});
