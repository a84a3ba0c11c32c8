// Preflight: every declared resource's prepare (artifacts fetched and verified, inputs read) after planning and before the first change.
import path from 'node:path';
import type { Host } from './host.ts';
import type { Declared, PrepareContext } from './resource.ts';
import type { Listener } from './report.ts';
import { errorMessage } from './errors.ts';
import { secrets } from './secrets.ts';

export interface PreflightOptions {
  host: Host;
  mode: 'plan' | 'converge';
  /** Hears one info line per resource that said what it checked. */
  listener?: Listener;
}

/** A preflight that failed: nothing was changed (what it had fetched is removed again); one line names the resource. */
export class PreflightError extends Error {
  readonly ref: string;
  constructor(item: Declared, cause: unknown) {
    const where = `${item.ref}${item.declaredAt ? ` (declared at ${item.declaredAt})` : ''}`;
    super(secrets.redact(`preflight: ${where}: ${errorMessage(cause)}; nothing was changed`), { cause });
    this.name = 'PreflightError';
    this.ref = item.ref;
  }
}

/**
 * Calls prepare of every top-level declaration, in order (a composite prepares for its parts in its own prepare), and
 * returns the lines they gave. The first failure removes what this preflight created and throws a PreflightError.
 */
export async function preflight(declared: readonly Declared[], options: PreflightOptions): Promise<string[]> {
  const { host, mode, listener = () => {} } = options;
  const created: string[] = [];
  const context: PrepareContext = {
    mode,
    created: (p) => void created.push(p),
    async directory(dir) {
      if (mode === 'plan') throw new Error(`plan writes nothing, and was asked to make ${dir}`);
      const missing: string[] = [];
      for (let p = path.posix.resolve(dir); p !== '/' && !(await host.stat(p)); p = path.posix.dirname(p)) missing.unshift(p);
      for (const p of missing) {
        await host.mkdir(p, { mode: 0o755, parents: false }); // one that appeared meanwhile is an error, never recorded as ours
        created.push(p);
      }
    },
  };
  const lines: string[] = [];
  for (const item of declared) {
    if (!item.type.prepare) continue;
    try {
      const line = await item.type.prepare(host, item.spec, context);
      if (!line) continue;
      const text = secrets.redact(`preflight: ${item.ref}: ${line}`);
      lines.push(text);
      listener({ type: 'message', level: 'info', text });
    } catch (error) {
      for (const p of created.reverse()) await host.remove(p).catch(() => {});
      throw new PreflightError(item, error);
    }
  }
  return lines;
}
