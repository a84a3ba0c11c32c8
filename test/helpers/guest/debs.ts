// Fixture .debs for the booted-guest tests, built with dpkg-deb on this machine, and an https server for them inside a guest.
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { testPki } from '../../stand-ins/tls.ts';
import type { Guest } from './container.ts';

export interface DebOptions {
  /** More files: path in the package → content (a string, or with a mode). */
  files?: Record<string, string | { content: string; mode: number }>;
  /** Maintainer scripts (DEBIAN/postinst, prerm, ...): name → shell script. */
  scripts?: Record<string, string>;
}

/** A tiny Architecture: all package (/usr/share/<name>/VERSION, and the files given); its file and sha256. */
export async function buildDeb(dir: string, name: string, version: string, opts: DebOptions = {}): Promise<{ file: string; sha256: string }> {
  const tree = path.join(dir, `${name}-${version}-tree`);
  await mkdir(path.join(tree, 'DEBIAN'), { recursive: true });
  await chmod(path.join(tree, 'DEBIAN'), 0o755);
  await writeFile(
    path.join(tree, 'DEBIAN/control'),
    [
      `Package: ${name}`,
      `Version: ${version}`,
      'Architecture: all',
      'Maintainer: meshvm tests <tests@meshvm.invalid>',
      'Section: misc',
      'Priority: optional',
      `Description: tiny package for meshvm's guest tests`,
      '',
    ].join('\n'),
  );
  for (const [script, text] of Object.entries(opts.scripts ?? {})) await writeFile(path.join(tree, 'DEBIAN', script), text, { mode: 0o755 });
  const files = { [`/usr/share/${name}/VERSION`]: `${version}\n`, ...opts.files };
  for (const [file, given] of Object.entries(files)) {
    const { content, mode } = typeof given === 'string' ? { content: given, mode: 0o644 } : given;
    await mkdir(path.dirname(path.join(tree, file)), { recursive: true });
    await writeFile(path.join(tree, file), content);
    await chmod(path.join(tree, file), mode);
  }
  const file = path.join(dir, `${name}_${version}_all.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '--build', tree, file]);
  await rm(tree, { recursive: true, force: true });
  return {
    file,
    sha256: createHash('sha256')
      .update(await readFile(file))
      .digest('hex'),
  };
}

/**
 * An https server for the files of dir (it stands for the site's artifact store), run by this Node inside the guest's
 * network namespace (so on the guest's 127.0.0.1); its CA is written to /etc/meshvm-test/ca.pem in the guest.
 */
export async function serveHttps(t: ExecutionContext, guest: Guest, dir: string): Promise<{ url: string; requests: string[] }> {
  const pki = await testPki();
  const keys = await mkdtemp(path.join(tmpdir(), 'meshvm-https-'));
  t.teardown(() => rm(keys, { recursive: true, force: true }));
  await writeFile(path.join(keys, 'cert.pem'), pki.certPem);
  await writeFile(path.join(keys, 'key.pem'), pki.keyPem, { mode: 0o600 });
  const script = `
    const fs = require('node:fs'), path = require('node:path');
    const [keys, dir] = process.argv.slice(1);
    const options = { cert: fs.readFileSync(path.join(keys, 'cert.pem')), key: fs.readFileSync(path.join(keys, 'key.pem')) };
    require('node:https').createServer(options, (req, res) => {
      console.log('GET ' + req.url);
      fs.readFile(path.join(dir, path.basename(req.url)), (error, body) => {
        if (error) { res.statusCode = 404; res.end(); } else res.end(body);
      });
    }).listen(0, '127.0.0.1', function () { console.log('listening ' + this.address().port); });`;
  const [cmd, ...args] = guest.netnsArgv([process.execPath, '-e', script, keys, dir]);
  const server = execa(cmd, args, { reject: false });
  t.teardown(async () => {
    server.kill('SIGTERM');
    await server; // PID 1 here does not reap: always wait for what we start
  });
  const requests: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    let seen = '';
    server.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const lines = seen.split('\n');
      seen = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith('listening ')) resolve(Number(line.slice('listening '.length)));
        if (line.startsWith('GET ')) requests.push(line.slice(4));
      }
    });
    server.then((r) => reject(new Error(`the https server exited: ${r.stderr}`)), reject);
  });
  await guest.writeFile('/etc/meshvm-test/ca.pem', pki.caPem);
  return { url: `https://127.0.0.1:${port}`, requests };
}
