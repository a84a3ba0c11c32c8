// Probes on the running machine, run as commands (so in the host's network namespace), optionally as the sidecar's own uid:
// istio-iptables returns traffic of the proxy's uid and gid (ISTIO_OUTPUT -m owner --uid-owner/--gid-owner ... -j RETURN), so a
// probe run as istio-proxy meets the network as Envoy and the agent do, not the sidecar's redirect to 15001.
import type { HostReader } from '../../engine/host.ts';

/** Who a probe runs as: the proxy's account from the machine's /etc/passwd (uid and primary gid). */
export interface ProbeAccount {
  name: string;
  uid: number;
  gid: number;
}

export async function proxyAccount(host: HostReader, name: string): Promise<ProbeAccount | undefined> {
  const user = (await host.accounts()).users.get(name);
  return user && { name, uid: user.uid, gid: user.gid };
}

export interface ConnectResult {
  /** The address the name resolved to (getaddrinfo: /etc/hosts, then DNS). */
  address?: string;
  /** Why it did not connect; undefined when it did. */
  error?: string;
}

export interface ProbeOptions {
  /** Run as this account (setpriv: real and effective uid and gid, no supplementary groups); default as meshvm runs. */
  as?: ProbeAccount | undefined;
  timeoutMs: number;
}

// $1 name or address, $2 port: resolve as the C library does, print the address, connect (bash's /dev/tcp)
const CONNECT = `out=$(getent ahosts "$1") || { echo "$1 does not resolve" >&2; exit 2; }
addr=\${out%%[[:space:]]*}
printf '%s\\n' "$addr"
exec 3<>"/dev/tcp/$addr/$2"`;

// $1 address, $2 port, $3 path: one HTTP/1.0 GET, the first 4 KiB of the answer
const HTTP_GET = `exec 3<>"/dev/tcp/$1/$2" || exit 3
printf 'GET %s HTTP/1.0\\r\\nHost: %s:%s\\r\\nUser-Agent: meshvm-verify\\r\\n\\r\\n' "$3" "$1" "$2" >&3
head -c 4096 <&3`;

/** The argv that runs a tiny bash program as `as` with a timeout: setpriv (util-linux), timeout (coreutils), bash; all on any Debian. */
export function probeArgv(script: string, args: readonly string[], o: ProbeOptions): string[] {
  const seconds = Math.max(1, Math.ceil(o.timeoutMs / 1000));
  const run = ['timeout', '-k', '1', String(seconds), 'bash', '-c', script, 'meshvm-probe', ...args];
  return o.as ? ['setpriv', `--reuid=${o.as.uid}`, `--regid=${o.as.gid}`, '--clear-groups', '--', ...run] : run;
}

/** Resolves `target` and opens a TCP connection to it, from the machine (its network namespace), as `o.as`. */
export async function probeConnect(host: HostReader, target: string, port: number, o: ProbeOptions): Promise<ConnectResult> {
  const result = await host.query(probeArgv(CONNECT, [target, String(port)], o), { timeoutMs: o.timeoutMs + 5000 });
  const address = result.stdout.split('\n')[0]?.trim() || undefined;
  if (result.exitCode === 0) return { ...(address ? { address } : {}) };
  return { ...(address ? { address } : {}), error: probeError(result.exitCode, result.stderr, o) };
}

export interface HttpResult {
  status?: number;
  /** The start of the body (a reason, for a failed readiness). */
  body?: string;
  error?: string;
}

/** One HTTP GET to address:port/path from the machine (as `o.as` when given). */
export async function probeHttp(host: HostReader, address: string, port: number, path: string, o: ProbeOptions): Promise<HttpResult> {
  const result = await host.query(probeArgv(HTTP_GET, [address, String(port), path], o), { timeoutMs: o.timeoutMs + 5000 });
  const status = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(result.stdout)?.[1];
  if (status) {
    const body = result.stdout
      .split(/\r?\n\r?\n/)
      .slice(1)
      .join('\n\n')
      .trim();
    return { status: Number(status), ...(body ? { body: body.slice(0, 300) } : {}) };
  }
  if (result.exitCode === 0) return { error: `no HTTP answer (${JSON.stringify(result.stdout.slice(0, 80))})` };
  return { error: probeError(result.exitCode, result.stderr, o) };
}

/** The reason in a probe's stderr: bash's "connect: Connection refused", setpriv's refusal, a timeout. */
export function probeError(exitCode: number, stderr: string, o: ProbeOptions): string {
  if (exitCode === 124 || exitCode === 137) return `no answer within ${o.timeoutMs} ms`;
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  if (lines.some((l) => /^setpriv: /.test(l)))
    return `cannot run the probe as ${o.as?.name ?? 'another user'} (${lines.find((l) => /^setpriv: /.test(l))!.replace(/^setpriv: /, '')}): run meshvm verify as root`;
  const unresolved = lines.find((l) => / does not resolve$/.test(l));
  if (unresolved) return unresolved;
  const connect = lines.map((l) => /connect: (.+)$/.exec(l)?.[1]).find(Boolean);
  if (connect) return connect;
  return lines.at(-1)?.replace(/^bash: (line \d+: )?/, '') || `exit ${exitCode}`;
}
