// Renders KEY=value lines as the sidecar's start script sources them: the docs' style (bare when safe), and istioctl's own (cluster.env of the istiod flow).
import { guardLine, isEnvName } from '../engine/values.ts';

/** A value is left bare when it has only characters a shell reads literally; otherwise it is single-quoted. */
export function shellQuote(value: string): string {
  if (value === '') return "''";
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", `'"'"'`)}'`;
}

/**
 * istioctl's shellescape.Quote (istio/istio pkg/util/shellescape/quote.go at fcda81b4, what istioctl x workload entry
 * configure writes with): its pattern is the Go raw string `[^\\w@%+=:,./-]`, a class of "\", "w" and the punctuation,
 * so anything with another letter or a digit is single-quoted (CANONICAL_REVISION='latest'), as the golden files show.
 */
export function istioctlQuote(value: string): string {
  if (value === '') return "''";
  return /[^\\w@%+=:,./-]/.test(value) ? `'${value.replaceAll("'", `'"'"'`)}'` : value;
}

/**
 * A variable the file cannot carry, refused naming the file, the key and the value: a key that is not a variable name
 * (an "=" or a space would change what is assigned), a value that is not one line (a newline would start a line of its own).
 */
function guard(file: string, key: string, value: string): void {
  guardLine(file, key, key, (k) => (isEnvName(k) ? undefined : 'it is not an environment variable name (letters, digits and "_")'));
  guardLine(file, key, value);
}

/** KEY=value lines (the docs' quoting), in the order given or sorted; `file` names the file in a refusal. */
export function renderEnvFile(values: Record<string, string | undefined>, options: { sorted?: boolean; file?: string } = {}): string {
  const lines = Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => {
      guard(options.file ?? 'an environment file', k, v!);
      return `${k}=${shellQuote(v!)}`;
    });
  if (options.sorted) lines.sort();
  return lines.join('\n') + '\n';
}

/** cluster.env as istioctl's mapToString writes it: KEY=istioctlQuote(value), the lines sorted as bytes. */
export function renderIstioctlEnv(values: Record<string, string>, file = 'cluster.env'): string {
  const lines = Object.entries(values).map(([k, v]) => {
    guard(file, k, v);
    return `${k}=${istioctlQuote(v)}`;
  });
  lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.join('\n') + '\n';
}
