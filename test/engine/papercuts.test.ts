// The unified-diff head of a new file's content counts its lines in plain English: "1 line", "2 lines".
import test from 'ava';
import { describeChanges } from '../../engine/report.ts';
import { File } from '../../resources/file.ts';

const head = async (content: string) =>
  (await describeChanges(File({ path: '/etc/x', content }), { content: { from: undefined, to: content } }))[0]?.split('\n')[0];

test('a new file of one line is "1 line", of two "2 lines", with or without the final newline', async (t) => {
  t.is(await head('a\n'), 'set content (1 line)');
  t.is(await head('a'), 'set content to a', 'one line without a newline is shown inline');
  t.is(await head('a\nb\n'), 'set content (2 lines)');
  t.is(await head('a\nb'), 'set content (2 lines)');
});
