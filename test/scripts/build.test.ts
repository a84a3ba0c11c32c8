// npm run build, run for real into a scratch directory (--outdir, so dist/ stays as other tests use it): it prints no
// ELF-note warnings from postject, and the self-contained executable it makes runs and has well-formed notes.
import test from 'ava';
import { execa } from 'execa';
import path from 'node:path';
import { PROJECT, scratchRoot } from '../helpers/scratch.ts';

test('the build prints no "Can\'t find string offset" warnings and its executable runs', async (t) => {
  const out = await scratchRoot(t, 'meshvm-build-');
  const build = await execa(process.execPath, [path.join(PROJECT, 'scripts/build.ts'), '--outdir', out], { reject: false, cwd: PROJECT });
  t.is(build.exitCode, 0, build.stderr);
  t.notRegex(`${build.stdout}\n${build.stderr}`, /Can't find string offset/);
  t.regex(build.stdout, /built in [\d.]+ s/);
  const version = await execa(path.join(out, 'meshvm'), ['--version'], { reject: false });
  t.is(version.exitCode, 0, version.stderr);
  t.regex(version.stdout.trim(), /^\d+\.\d+\.\d+/, 'meshvm answers, not the node it was made from');
  const readelf = await execa('readelf', ['-n', '-W', path.join(out, 'meshvm')], { reject: false, stdout: 'ignore' });
  // readelf comes with binutils, which the build needs for objcopy: a missing or failing readelf is a failure, not a pass
  t.is(readelf.exitCode, 0, readelf.stderr);
  t.notRegex(readelf.stderr, /[Cc]orrupt note|invalid namesz/, 'readelf finds no malformed notes');
});

test('the build refuses --outdir without a directory', async (t) => {
  const build = await execa(process.execPath, [path.join(PROJECT, 'scripts/build.ts'), '--outdir'], { reject: false, cwd: PROJECT });
  t.not(build.exitCode, 0);
  t.regex(build.stderr, /--outdir needs a directory/);
});
