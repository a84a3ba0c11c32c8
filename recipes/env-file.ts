// Renders KEY=value lines as the sidecar's start script sources them (values with spaces or quotes are quoted).

export function renderEnvFile(values: Record<string, string | undefined>): string {
  const lines = Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${/^[\w@%+=:,./*-]*$/.test(v!) ? v : `'${v!.replaceAll("'", `'\\''`)}'`}`);
  return lines.join('\n') + '\n';
}
