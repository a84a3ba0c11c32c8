// A package's service, read before and after a failed upgrade: whether it still runs the version put back.
import type { HostReader } from '../../engine/host.ts';

/** A service's state and invocation (systemd's InvocationID changes with every start), when the package names one. */
export async function serviceRun(host: HostReader, service: string | undefined): Promise<{ active: string; invocation: string } | undefined> {
  if (!service || !host.live) return undefined;
  const result = await host.query(['systemctl', 'show', '-p', 'ActiveState', '-p', 'InvocationID', service]);
  const values = Object.fromEntries(result.stdout.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  return { active: values.ActiveState ?? '', invocation: values.InvocationID ?? '' };
}

/** " and istio still runs it", or what became of the service during the failed install. */
export async function stillRuns(host: HostReader, service: string | undefined, before: { active: string; invocation: string } | undefined): Promise<string> {
  const after = await serviceRun(host, service);
  if (!service || !before || !after) return '';
  const name = service.replace(/\.service$/, '');
  if (before.active !== 'active') return ` (${name} was not running)`;
  if (after.active === 'active' && after.invocation === before.invocation) return ` and ${name} still runs it`;
  return after.active === 'active' ? `; ${name} was restarted during the failed install` : `; ${name} is ${after.active} now`;
}
