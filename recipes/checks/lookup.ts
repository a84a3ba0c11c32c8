// What the checks share: a name looked up (system resolver or --resolver), a TCP connection tried, a declared file found.
import dns from 'node:dns';
import net from 'node:net';
import type { CheckContext } from '../../engine/check.ts';

/** The IPv4 addresses of a name, or why there are none (never throws). */
export type Lookup = (name: string) => Promise<{ addresses: string[]; error?: string }>;

/** getaddrinfo (/etc/hosts included) by default; with `resolver` ("IP" or "IP:PORT") that DNS server alone. */
export function lookupFor(context: Pick<CheckContext, 'resolver' | 'timeoutMs'>): Lookup {
  let ask: (name: string) => Promise<string[]>;
  if (!context.resolver) ask = async (name) => (await dns.promises.lookup(name, { all: true, family: 4 })).map((a) => a.address);
  else {
    const resolver = new dns.promises.Resolver({ timeout: context.timeoutMs, tries: 1 });
    resolver.setServers([context.resolver]);
    ask = (name) => resolver.resolve4(name);
  }
  return (name) =>
    ask(name).then(
      (addresses) => ({ addresses }),
      (error: NodeJS.ErrnoException) => ({ addresses: [], error: error.code ?? error.message }),
    );
}

/** Where a lookup went, for details and fixes: "the system resolver" or "the DNS server 127.0.0.1". */
export function resolverName(context: Pick<CheckContext, 'resolver'>): string {
  return context.resolver ? `the DNS server ${context.resolver}` : 'the system resolver';
}

/** undefined when the port accepts a connection; else why not. */
export function tcpConnect(ip: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: ip, port, timeout: timeoutMs });
    socket.once('connect', () => (socket.destroy(), resolve(undefined)));
    socket.once('timeout', () => (socket.destroy(), resolve(`no answer within ${timeoutMs} ms`)));
    socket.once('error', (error) => resolve(error.message));
  });
}
