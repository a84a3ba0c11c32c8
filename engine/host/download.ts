// Downloads to guest paths: an https URL streamed to a staged file, kept only when its sha256 is the one required; or only hashed (plan).
import fs from 'node:fs/promises';
import { CREATE_NEW, failure, type SafeRoot, stagedName, UnsafePathError, unlinkIfThere } from './safe-path.ts';

export interface DownloadOptions {
  sha256: string;
  /** A guest path: the PEM of the CA the server's certificate chains to (else the system's). */
  caFile?: string | undefined;
  timeoutMs?: number;
}

/** What arrived: its sha256 and size. */
export interface Fetched {
  sha256: string;
  bytes: number;
}

/** The staged file is made by the safe walk (O_EXCL, never through a link) and renamed over p only when its sha256 is right. */
export async function downloadTo({ read, safe }: { read: ReadGuest; safe: SafeRoot }, url: string, p: string, opts: DownloadOptions): Promise<Fetched> {
  const ca = await readCa(read, opts.caFile);
  const { dir, name } = await safe.openParent(p);
  const temp = dir.at(stagedName(name));
  try {
    await unlinkIfThere(temp);
    const handle = await fs.open(temp, CREATE_NEW, 0o644);
    let got: Fetched;
    try {
      // written through the handle (a FileHandle's own write stream with autoClose off never finishes a pipeline)
      const { Writable } = await import('node:stream');
      const sink = () => new Writable({ write: (chunk: Buffer, _encoding, done) => void handle.write(chunk).then(() => done(), done) });
      got = await fetchThrough(url, { ca, timeoutMs: opts.timeoutMs }, sink);
      await handle.sync();
    } finally {
      await handle.close();
    }
    checkSha256(url, got, opts.sha256);
    await fs.rename(temp, dir.at(name));
    return got;
  } catch (error) {
    throw failure(error, 'download to', p, dir);
  } finally {
    await unlinkIfThere(temp).catch(() => {});
    await dir.close();
  }
}

/** Streams an https URL through sha256 and keeps nothing (plan's preflight): refused like a download when it differs. */
export async function hashDownload(read: ReadGuest, url: string, opts: DownloadOptions): Promise<Fetched> {
  const ca = await readCa(read, opts.caFile);
  const { Writable } = await import('node:stream');
  const got = await fetchThrough(url, { ca, timeoutMs: opts.timeoutMs }, () => new Writable({ write: (_chunk, _encoding, done) => done() }));
  checkSha256(url, got, opts.sha256);
  return got;
}

function checkSha256(url: string, got: Fetched, want: string): void {
  if (got.sha256 !== want.toLowerCase()) throw new Error(`the download of ${url} has sha256 ${got.sha256}, not the ${want} the spec requires; refusing it`);
}

/** Reads a guest file's content by the safe walk (host.readFile); undefined when it is missing. */
type ReadGuest = (p: string) => Promise<string | undefined>;

/** The CA file, read inside the root by the safe walk and checked to be PEM certificates before it is trusted. */
async function readCa(read: ReadGuest, caFile: string | undefined): Promise<string | undefined> {
  if (caFile === undefined) return undefined;
  const text = await read(caFile).catch((error: NodeJS.ErrnoException) => {
    throw new Error(`the CA file ${caFile} (caFile) cannot be read: ${error instanceof UnsafePathError ? error.message : (error.code ?? error.message)}`);
  });
  if (text === undefined) throw new Error(`the CA file ${caFile} (caFile) cannot be read: ENOENT`);
  if (!/^-----BEGIN CERTIFICATE-----$/m.test(text)) throw new Error(`the CA file ${caFile} (caFile) holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return text;
}

/** Streams an https response into what sink() makes, returning the sha256 and size of what arrived. */
async function fetchThrough(url: string, opts: { ca: string | undefined; timeoutMs: number | undefined }, sink: () => NodeJS.WritableStream): Promise<Fetched> {
  const { request } = await import('node:https');
  const { createHash } = await import('node:crypto');
  const { pipeline } = await import('node:stream/promises');
  const timeoutMs = opts.timeoutMs ?? 300_000;
  if (!url.startsWith('https://')) throw new Error(`refusing to download ${url}: only https URLs are allowed`);
  const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    // rejectUnauthorized set: NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment does not turn the check off
    const req = request(url, { ca: opts.ca, timeout: timeoutMs, rejectUnauthorized: true }, resolve);
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs / 1000} s`)));
    req.on('error', (error) => reject(new Error(`downloading ${url} failed: ${error.message}`)));
    req.end();
  });
  if (response.statusCode !== 200) {
    response.resume();
    throw new Error(`downloading ${url} failed: HTTP ${response.statusCode}`);
  }
  const hash = createHash('sha256');
  let bytes = 0;
  response.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    bytes += chunk.length;
  });
  await pipeline(response, sink());
  return { sha256: hash.digest('hex'), bytes };
}
