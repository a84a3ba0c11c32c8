// Benchmark: a 1,000-rule chain with meshvm's Iptables (one restore, one read) beside per-rule `iptables -C`/`-A` calls as peers do.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { $ } from 'zx';
import { localHost } from '../engine/host-local.ts';
import type { Host } from '../engine/host.ts';
import { runResources } from '../engine/runner.ts';
import { Iptables } from '../resources/iptables/index.ts';
import { splitArgs } from '../resources/iptables/parse.ts';

const RULES = Number(process.env.BENCH_RULES ?? 1000);
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const PEER_RUNS = Number(process.env.BENCH_PEER_RUNS ?? 3);
const CHAIN = 'MESHVM_BENCH';
const PEER_CHAIN = 'PEER_BENCH';
$.verbose = false;
$.quiet = true;

const ns = `meshvm-ipt-bench-${randomBytes(4).toString('hex')}`;
const root = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-ipt-bench-'));
await $`ip netns add ${ns}`;
const cleanup = async () => {
  await $({ nothrow: true })`ip netns del ${ns}`;
  await fs.rm(root, { recursive: true, force: true });
};
process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));

const rules = Array.from({ length: RULES }, (_, i) => `-p tcp -d 10.${i >> 8}.${i & 255}.1 --dport ${10000 + (i % 50000)} -j REDIRECT --to-ports 15001`);
const from = { chain: 'OUTPUT', position: 'first' as const, match: '-p tcp' };
const declare = (ensure: 'present' | 'absent' = 'present') => [Iptables({ table: 'nat', chain: CHAIN, rules, from, ensure })];
const host = () => localHost({ root, netns: ns });

async function meshvm(ensure: 'present' | 'absent' = 'present'): Promise<{ seconds: number; status: string }> {
  const started = performance.now();
  const result = await runResources(declare(ensure), { host: host(), mode: 'converge' });
  const seconds = (performance.now() - started) / 1000;
  if (result.failed) throw new Error(result.resources[0]?.error);
  return { seconds, status: result.resources[0]!.status };
}

/** What the peers' modules do: `iptables -C` per rule (and for the chain and the jump), `-A`/`-I` where it is missing. */
async function peers(h: Host): Promise<number> {
  const started = performance.now();
  const ipt = ['iptables', '-w', '-t', 'nat'];
  if ((await h.query([...ipt, '-S', PEER_CHAIN])).exitCode !== 0) await h.run([...ipt, '-N', PEER_CHAIN]);
  for (const rule of rules) {
    const args = splitArgs(rule);
    if ((await h.query([...ipt, '-C', PEER_CHAIN, ...args])).exitCode !== 0) await h.run([...ipt, '-A', PEER_CHAIN, ...args]);
  }
  const jump = ['-p', 'tcp', '-j', PEER_CHAIN];
  if ((await h.query([...ipt, '-C', 'OUTPUT', ...jump])).exitCode !== 0) await h.run([...ipt, '-I', 'OUTPUT', '1', ...jump]);
  return (performance.now() - started) / 1000;
}

async function peersReset(): Promise<void> {
  await $({ nothrow: true })`ip netns exec ${ns} iptables -w -t nat -D OUTPUT -p tcp -j ${PEER_CHAIN}`;
  await $({ nothrow: true })`ip netns exec ${ns} iptables -w -t nat -F ${PEER_CHAIN}`;
  await $({ nothrow: true })`ip netns exec ${ns} iptables -w -t nat -X ${PEER_CHAIN}`;
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s.at(-1)! };
};
const rows: string[] = [];
function report(name: string, samples: number[], target = '') {
  const t = stats(samples);
  rows.push(`| ${name} | ${samples.length} | ${t.min.toFixed(3)} | ${t.median.toFixed(3)} | ${t.max.toFixed(3)} | ${target} |`);
}

try {
  // a host that already has rules of its own (Docker-like), in the distribution's default backend
  for (const args of [
    ['-N', 'DOCKER'],
    ['-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER'],
    ['-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE'],
    ['-A', 'DOCKER', '-i', 'docker0', '-j', 'RETURN'],
  ]) {
    await $`ip netns exec ${ns} iptables -w -t nat ${args}`;
  }
  const version = (await $`iptables --version`).stdout.trim();
  await meshvm();
  await meshvm('absent'); // warm: module loading and the first spawn are not what is measured

  const first: number[] = [];
  const noop: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const applied = await meshvm();
    if (applied.status !== 'changed') throw new Error(`first apply reported ${applied.status}`);
    first.push(applied.seconds);
    const again = await meshvm();
    if (again.status !== 'unchanged') throw new Error(`no-op reported ${again.status}`);
    noop.push(again.seconds);
    await meshvm('absent');
  }
  const peerFirst: number[] = [];
  const peerNoop: number[] = [];
  for (let i = 0; i < PEER_RUNS; i++) {
    await peersReset();
    peerFirst.push(await peers(host()));
    peerNoop.push(await peers(host()));
  }
  const lines = (await $`ip netns exec ${ns} iptables-save -t nat`).stdout.split('\n');
  if (lines.filter((l) => l.startsWith(`-A ${PEER_CHAIN} `)).length !== RULES) throw new Error("the peers' chain does not hold every rule");

  report(`meshvm Iptables: first apply, ${RULES} rules (one iptables-restore)`, first, '≤ 0.3 s');
  report(`meshvm Iptables: no-op check, ${RULES} rules (one read)`, noop, '≤ 0.1 s');
  report(`per-rule \`iptables -C\` + \`-A\`: first apply, ${RULES} rules`, peerFirst);
  report(`per-rule \`iptables -C\`: no-op check, ${RULES} rules`, peerNoop);
  console.log(
    `Iptables benchmark: ${version}, Node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), inside network namespace ${ns}; seconds in-process around runResources / the peer loop\n`,
  );
  console.log('| case | runs | min s | median s | max s | target |');
  console.log('|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
} finally {
  await cleanup();
}
