// Downloads to guest paths: an https URL streamed to a staged file, kept only when its sha256 is the one required.
import fs from 'node:fs/promises';
import type { RootPaths } from './root-paths.ts';
import { stagedName } from './write.ts';

export interface DownloadOptions {
  sha256: string;
  caFile?: string | undefined;
  timeoutMs?: number;
}

export async function downloadTo(paths: RootPaths, url: string, p: string, opts: DownloadOptions): Promise<void> {
  const target = paths.real(p);
  await paths.assertInside(target);
  const temp = stagedName(target);
  await fs.rm(temp, { force: true });
  try {
    const ca = opts.caFile ? await fs.readFile(opts.caFile, 'utf8') : undefined;
    const got = await fetchToFile(url, temp, { ca, timeoutMs: opts.timeoutMs ?? 300_000 });
    if (got !== opts.sha256.toLowerCase()) {
      throw new Error(`the download of ${url} has sha256 ${got}, not the ${opts.sha256} the spec requires; refusing it`);
    }
    await fs.rename(temp, target);
  } finally {
    await fs.rm(temp, { force: true });
  }
}

/** Streams an https response to a file, returning the sha256 of what arrived. */
async function fetchToFile(url: string, file: string, opts: { ca: string | undefined; timeoutMs: number }): Promise<string> {
  const { request } = await import('node:https');
  const { createHash } = await import('node:crypto');
  const { createWriteStream } = await import('node:fs');
  const { pipeline } = await import('node:stream/promises');
  if (!url.startsWith('https://')) throw new Error(`refusing to download ${url}: only https URLs are allowed`);
  const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = request(url, { ca: opts.ca, timeout: opts.timeoutMs }, resolve);
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${opts.timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
  if (response.statusCode !== 200) {
    response.resume();
    throw new Error(`downloading ${url} failed: HTTP ${response.statusCode}`);
  }
  const hash = createHash('sha256');
  response.on('data', (chunk: Buffer) => hash.update(chunk));
  await pipeline(response, createWriteStream(file, { mode: 0o644, flags: 'wx' }));
  return hash.digest('hex');
}
