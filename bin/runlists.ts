// The built-in runlists: embedded by the build (a bundle or the executable has no runlists/ beside it), else read from runlists/.
import fs from 'node:fs/promises';

declare const __MESHVM_RUNLISTS__: Record<string, string> | undefined;

export async function builtinRunlists(): Promise<ReadonlyMap<string, string>> {
  if (typeof __MESHVM_RUNLISTS__ !== 'undefined') return new Map(Object.entries(__MESHVM_RUNLISTS__));
  const dir = new URL('../runlists/', import.meta.url);
  const names = (await fs.readdir(dir)).filter((f) => f.endsWith('.yaml')).sort();
  return new Map(await Promise.all(names.map(async (f) => [f.replace(/\.yaml$/, ''), await fs.readFile(new URL(f, dir), 'utf8')] as const)));
}
