// The embedded runtime's checksum: the build refuses a Node.js binary whose sha256 is not the one pinned in scripts/node-runtime.sha256.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

export const PIN_FILE = path.join(import.meta.dirname, 'node-runtime.sha256');

/** `node-v24.21.0-linux-x64`: how the pin file names a runtime. */
export function runtimeName(version = process.version, platform: string = process.platform, arch: string = process.arch): string {
  return `node-${version}-${platform}-${arch}`;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk);
  return hash.digest('hex');
}

/** The pinned sha256 by runtime name, from the pin file's `<sha256>  <name>` lines (# comments). */
export function parsePins(text: string, file = PIN_FILE): Map<string, string> {
  const pins = new Map<string, string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([0-9a-f]{64}) {2}(node-v\d+\.\d+\.\d+-[a-z0-9]+-[a-z0-9]+)$/.exec(line);
    if (!match) throw new Error(`${file}:${i + 1}: expected "<sha256>  node-vX.Y.Z-<platform>-<arch>", got "${line}"`);
    pins.set(match[2]!, match[1]!);
  }
  return pins;
}

/** Throws unless `binary` (the runtime the build injects into) has the sha256 pinned for `name`; returns the sha256. */
export async function checkRuntime(binary: string, name = runtimeName(), pinFile = PIN_FILE): Promise<string> {
  const pinned = parsePins(await fs.readFile(pinFile, 'utf8'), pinFile).get(name);
  const actual = await sha256File(binary);
  if (pinned === undefined) {
    throw new Error(
      `${binary} is ${name}, which ${pinFile} does not pin (its sha256 is ${actual}): check it against nodejs.org's SHASUMS256.txt, then add "${actual}  ${name}"`,
    );
  }
  if (actual !== pinned) {
    throw new Error(`${binary} (${name}) has sha256 ${actual}, but ${pinFile} pins ${pinned}: refusing to build the executable on an unknown runtime`);
  }
  return actual;
}
