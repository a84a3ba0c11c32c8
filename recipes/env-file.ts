// Renders KEY=value lines as the sidecar's start script sources them, quoted the way istioctl quotes them (shellescape).

/** A value is left bare when it has only characters a shell reads literally; otherwise it is single-quoted. */
export function shellQuote(value: string): string {
  if (value === '') return "''";
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", `'"'"'`)}'`;
}

export function renderEnvFile(values: Record<string, string | undefined>, options: { sorted?: boolean } = {}): string {
  const lines = Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${shellQuote(v!)}`);
  if (options.sorted) lines.sort();
  return lines.join('\n') + '\n';
}
