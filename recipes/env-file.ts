// Renders KEY=value lines as the sidecar's start script sources them: the docs' style (bare when safe), and istioctl's own (cluster.env of the istiod flow).

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

/** A value that would break the file: a newline ends the line, a NUL ends the text. */
function refuseBreaks(key: string, value: string): void {
  if (/[\n\r\0]/.test(value))
    throw new Error(`${key}: ${JSON.stringify(value).slice(0, 80)} has a newline or NUL; an environment file holds one line per variable`);
}

export function renderEnvFile(values: Record<string, string | undefined>, options: { sorted?: boolean } = {}): string {
  const lines = Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => {
      refuseBreaks(k, v!);
      return `${k}=${shellQuote(v!)}`;
    });
  if (options.sorted) lines.sort();
  return lines.join('\n') + '\n';
}

/** cluster.env as istioctl's mapToString writes it: KEY=istioctlQuote(value), the lines sorted as bytes. */
export function renderIstioctlEnv(values: Record<string, string>): string {
  const lines = Object.entries(values).map(([k, v]) => {
    refuseBreaks(k, v);
    return `${k}=${istioctlQuote(v)}`;
  });
  lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.join('\n') + '\n';
}
