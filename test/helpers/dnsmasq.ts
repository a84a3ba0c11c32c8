// A real dnsmasq on 127.0.0.1 and a free port for tests that need a resolver: its own records answered authoritatively.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { until } from './poll.ts';

/**
 * Starts dnsmasq with these further options (e.g. `--host-record=name,ip,ttl`, `--addn-hosts=FILE`); it also answers
 * probe.test, which is how readiness is seen. The port is free when picked, but dnsmasq binds TCP too and a parallel
 * test may take either meanwhile: then another port. Stopped at teardown; `reload` sends SIGHUP (re-reads hosts files).
 */
export async function startDnsmasq(t: ExecutionContext, args: readonly string[]): Promise<{ server: string; reload(): void }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeUdpPort();
    const server = `127.0.0.1:${port}`;
    const child = spawn(
      'dnsmasq',
      [
        '-k',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        '--no-poll',
        '--bind-interfaces',
        '--listen-address=127.0.0.1',
        `--port=${port}`,
        '--pid-file=',
        '--host-record=probe.test,127.0.0.9',
        ...args,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    t.teardown(() => void child.kill('SIGTERM'));
    const resolver = new Resolver({ timeout: 200, tries: 1 });
    resolver.setServers([server]);
    const answers = () =>
      resolver.resolve4('probe.test').then(
        () => true,
        (e: NodeJS.ErrnoException) => e.code !== 'ECONNREFUSED' && e.code !== 'ETIMEOUT',
      );
    await until(async () => child.exitCode !== null || (await answers()), { what: `dnsmasq to answer on ${server}`, timeoutMs: 5000, intervalMs: 50 });
    if (child.exitCode === null) return { server, reload: () => void child.kill('SIGHUP') };
    if (attempt < 5 && /Address already in use/.test(stderr)) continue;
    throw new Error(`dnsmasq exited ${child.exitCode}: ${stderr}`);
  }
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}
