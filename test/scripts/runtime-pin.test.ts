// The embedded runtime's sha256 is pinned in the repository (scripts/node-runtime.sha256) and the build checks it;
// every install script the project's dependencies run is listed in package.json's allowScripts.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkRuntime, parsePins, PIN_FILE, runtimeName, sha256File } from '../../scripts/runtime-pin.ts';
import { PROJECT, scratchRoot } from '../helpers/scratch.ts';

test('the Node.js this runs on (the one the build injects into) is the pinned one', async (t) => {
  t.is(await checkRuntime(process.execPath), parsePins(await fs.readFile(PIN_FILE, 'utf8')).get(runtimeName()) ?? 'not pinned');
});

test('a runtime with one byte changed, or a version not pinned, is refused naming the file and both checksums', async (t) => {
  const dir = await scratchRoot(t);
  const pins = path.join(dir, 'pins');
  const binary = path.join(dir, 'node');
  await fs.writeFile(binary, 'pretend runtime\n');
  const good = await sha256File(binary);
  await fs.writeFile(pins, `# comment\n${good}  node-v24.0.0-linux-x64\n`);
  t.is(await checkRuntime(binary, 'node-v24.0.0-linux-x64', pins), good);
  await fs.writeFile(binary, 'pretend runtime!\n');
  const bad = await sha256File(binary);
  await t.throwsAsync(checkRuntime(binary, 'node-v24.0.0-linux-x64', pins), {
    message: `${binary} (node-v24.0.0-linux-x64) has sha256 ${bad}, but ${pins} pins ${good}: refusing to build the executable on an unknown runtime`,
  });
  await t.throwsAsync(checkRuntime(binary, 'node-v24.1.0-linux-x64', pins), { message: new RegExp(`does not pin \\(its sha256 is ${bad}\\)`) });
  await fs.writeFile(pins, `${good} node-v24.0.0-linux-x64\n`);
  await t.throwsAsync(checkRuntime(binary, 'node-v24.0.0-linux-x64', pins), { message: new RegExp(`^${pins}:1: expected`) });
});

test('allowScripts lists exactly the dependencies with install scripts (package-lock.json hasInstallScript)', async (t) => {
  const pkg = JSON.parse(await fs.readFile(path.join(PROJECT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
  const lock = JSON.parse(await fs.readFile(path.join(PROJECT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { hasInstallScript?: boolean }>;
  };
  const withScripts = Object.entries(lock.packages)
    .filter(([, entry]) => entry.hasInstallScript)
    .map(([where]) => where.replace(/^.*node_modules\//, ''))
    .sort();
  t.true(withScripts.length > 0);
  t.deepEqual(Object.keys(pkg.allowScripts ?? {}).sort(), withScripts);
  t.true(Object.values(pkg.allowScripts ?? {}).every((allowed) => allowed === true));
});
