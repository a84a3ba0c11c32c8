// Iptables: one chain meshvm owns in one table (its rules, in order) and the one jump into it from a built-in chain.
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { defineResource, type Changes } from '../../engine/resource.ts';
import type { Host, HostReader } from '../../engine/host.ts';
import { CommandError, errorMessage, indent } from '../../engine/errors.ts';
import { childEnvironment } from '../../engine/host/exec.ts';
import {
  BUILTIN_CHAINS,
  TABLES,
  TAG_PREFIX,
  backendCommands,
  chainNameProblem,
  chooseBackend,
  countRuleLines,
  readChainState,
  desiredJump,
  desiredRules,
  joinArgs,
  jumpArgs,
  jumpTag,
  jumpTarget,
  jumpsToFix,
  legacyDecides,
  parseIptablesSave,
  parseVersionBackend,
  renderRestore,
  ruleTag,
  sameRules,
  splitArgs,
  tagArgs,
  type Backend,
  type IptablesState,
  type RestoreInput,
  type RuleEntry,
  type SavedTable,
} from './parse.ts';

export type { IptablesState } from './parse.ts';

const COMMANDS = new Set(
  '-A --append -C --check -D --delete -I --insert -R --replace -L --list -S --list-rules -F --flush -Z --zero -N --new-chain -X --delete-chain -P --policy -E --rename-chain -t --table'.split(
    ' ',
  ),
);
const TARGETS = new Set(['-j', '--jump', '-g', '--goto']);

/** A rule or a match: one string split as iptables-restore splits a line, or the arguments as an array. */
function ruleArgs(what: 'rule' | 'match') {
  return z.union([z.string(), z.array(z.string()).min(1, `an empty ${what} array; leave it out instead`)]).transform((value, ctx) => {
    let args: string[];
    try {
      args = typeof value === 'string' ? splitArgs(value) : value;
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: `${errorMessage(error)}: ${value}` });
      return z.NEVER;
    }
    const problem = argsProblem(args, what);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
    return args;
  });
}

function argsProblem(args: readonly string[], what: 'rule' | 'match'): string | undefined {
  if (what === 'rule' && args.length === 0) return 'a rule must not be empty (an empty rule would only count packets)';
  for (const [i, arg] of args.entries()) {
    if (/[\n\r\0]/.test(arg)) return `${what} arguments must not contain a line break`;
    if (COMMANDS.has(arg)) return `"${arg}" is an iptables command, not part of a ${what}: write only matches and a target (-p tcp --dport 80 -j ACCEPT)`;
    if (what === 'match' && TARGETS.has(arg)) return `the match must not name a target: meshvm adds "-j <chain>" itself`;
    if (arg === '--comment' && args[i + 1]?.startsWith(TAG_PREFIX)) return `comments starting "${TAG_PREFIX}" are meshvm's own tags`;
  }
  return undefined;
}

export const iptablesSpec = z
  .strictObject({
    table: z.enum(TABLES).default('filter'),
    /** The chain meshvm owns: created, refilled with exactly `rules`, never shared. */
    chain: z.string().superRefine((name, ctx) => {
      const problem = chainNameProblem(name);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    /** In order; each one as `-p tcp --dport 8080 -j REDIRECT --to-ports 15001` or as an argument array. */
    rules: z.array(ruleArgs('rule')).default([]),
    /** The one jump into the chain. "first": ahead of every rule meshvm does not own; "last": behind them. */
    from: z
      .strictObject({
        chain: z.string(),
        position: z.enum(['first', 'last']).default('first'),
        match: ruleArgs('match').default([]),
      })
      .optional(),
    /** ip6tables instead of iptables. */
    ipv6: z.boolean().default(false),
    ensure: z.enum(['present', 'absent']).default('present'),
  })
  .superRefine((spec, ctx) => {
    const builtins = BUILTIN_CHAINS[spec.table];
    if (spec.from && !builtins.includes(spec.from.chain)) {
      ctx.addIssue({
        code: 'custom',
        path: ['from', 'chain'],
        message: `${spec.from.chain} is not a built-in chain of the ${spec.table} table (one of ${builtins.join(', ')})`,
      });
    }
    const seen = new Map<string, number>();
    for (const [i, args] of spec.rules.entries()) {
      const key = JSON.stringify(args);
      const first = seen.get(key);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['rules', i], message: `repeats rules[${first}]; list each rule once` });
      else seen.set(key, i);
    }
  });
export type IptablesSpec = z.output<typeof iptablesSpec>;

interface Dump {
  text?: string;
  problem?: string;
}

interface Detected {
  backend: Backend;
  dumps: { ipv4: Dump; ipv6: Dump };
}

async function save(host: HostReader, command: string): Promise<Dump> {
  try {
    // the wrapper gives the nft tools 5 s: a wedged nft must not hang the run
    const result = await host.query([command], { timeoutMs: 5_000 });
    if (result.exitCode === 0) return { text: result.stdout };
    return { problem: `\`${command}\` exited ${result.exitCode}: ${result.stderr.trim().split('\n').at(-1) ?? ''}` };
  } catch (error) {
    return { problem: errorMessage(error) };
  }
}

const ruleCount = (dumps: Dump[]) => (dumps.some((d) => d.text !== undefined) ? dumps.reduce((n, d) => n + countRuleLines(d.text ?? ''), 0) : undefined);

/**
 * Both legacy dumps without running iptables-legacy-save, when they are known to be empty: the legacy tools print the
 * tables the kernel lists in /proc/net/ip_tables_names and ip6_tables_names (the x_tables of this network namespace),
 * so when neither file lists one (or the module was never loaded) there is nothing to print. Only for commands run in
 * this process's own namespace (no netns: /proc/net is ours) and with the legacy tools installed (else the dumps are
 * what a missing tool gives: undefined). Anything else, or a table listed: undefined, and the tools are run.
 */
async function emptyLegacyDumps(host: HostReader): Promise<Dump[] | undefined> {
  if (host.netns !== undefined) return undefined;
  const listed = async (file: string) => {
    try {
      return (await fs.readFile(file, 'utf8')).trim() !== '';
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ENOENT' ? false : undefined;
    }
  };
  const [v4, v6] = await Promise.all([listed('/proc/net/ip_tables_names'), listed('/proc/net/ip6_tables_names')]);
  if (v4 !== false || v6 !== false) return undefined;
  const installed = async (command: string) => {
    for (const dir of (childEnvironment().PATH ?? '').split(':')) {
      if (!dir.startsWith('/')) continue;
      if (
        await fs.access(path.join(dir, command), fs.constants.X_OK).then(
          () => true,
          () => false,
        )
      )
        return true;
    }
    return false;
  };
  const [has4, has6] = await Promise.all([installed('iptables-legacy-save'), installed('ip6tables-legacy-save')]);
  if (!has4 || !has6) return undefined;
  return [{ text: '' }, { text: '' }];
}

/** Which backend this host uses, with both families' full dumps from it: read once per run (until something changes). */
export function detectBackend(host: HostReader): Promise<Detected> {
  return host.memo('iptables-backend', async () => {
    const known = await emptyLegacyDumps(host);
    // all four reads at once (save never rejects): the nft pair is used only when the legacy count does not decide
    const nftReads = Promise.all([save(host, 'iptables-nft-save'), save(host, 'ip6tables-nft-save')]);
    const legacy = known ?? (await Promise.all([save(host, 'iptables-legacy-save'), save(host, 'ip6tables-legacy-save')]));
    const legacyRules = ruleCount(legacy);
    const nft = legacyDecides(legacyRules) ? undefined : await nftReads;
    const nftRules = nft && ruleCount(nft);
    let systemDefault: 'nft' | 'legacy' | undefined;
    if (legacyRules !== undefined && legacyRules === nftRules) {
      systemDefault = parseVersionBackend((await host.query(['iptables', '--version']).catch(() => ({ stdout: '' }))).stdout);
    }
    const backend = chooseBackend({ legacyRules, nftRules, systemDefault });
    const dumps = backend === 'legacy' ? legacy : backend === 'nft' ? nft! : await Promise.all([save(host, 'iptables-save'), save(host, 'ip6tables-save')]);
    return { backend, dumps: { ipv4: dumps[0]!, ipv6: dumps[1]! } };
  });
}

/** The whole normalised iptables-save of one family, shared by every Iptables resource in the run. */
async function readTables(host: HostReader, ipv6: boolean): Promise<Map<string, SavedTable>> {
  const { backend, dumps } = await detectBackend(host);
  const fam = ipv6 ? 'ipv6' : 'ipv4';
  return host.memo(`iptables-save:${backend}:${fam}`, async () => {
    const dump = dumps[fam];
    if (dump.text === undefined)
      throw new Error(`cannot read the ${fam} tables with the ${backend} backend: ${dump.problem}\n  is the iptables package installed?`);
    return parseIptablesSave(dump.text);
  });
}

const MAX_SHOWN = 40;

function describeRules(from: RuleEntry[] | undefined, to: RuleEntry[]): string {
  const have = new Set(from?.map((r) => r.tag));
  const want = new Set(to.map((r) => r.tag));
  const lines = to.filter((r) => !have.has(r.tag)).map((r) => `+ ${r.rule}`);
  const added = lines.length;
  const kept = new Set<string>();
  for (const r of from ?? []) {
    if (r.tag !== undefined && want.has(r.tag) && !kept.has(r.tag)) kept.add(r.tag);
    else lines.push(`- ${r.rule}${r.tag === undefined ? ' (not added by meshvm)' : want.has(r.tag) ? ' (a second copy)' : ''}`);
  }
  const removed = lines.length - added;
  const order = (list: RuleEntry[]) => list.filter((r) => kept.has(r.tag!)).map((r) => r.tag);
  const reordered = [...new Set(order(from ?? []))].join() !== order(to).join();
  if (reordered) lines.push('~ the rules meshvm keeps are put back in the declared order');
  const head = !from?.length
    ? `add ${to.length} rule${to.length === 1 ? '' : 's'}`
    : `update rules: ${added} added, ${removed} removed${reordered ? ', reordered' : ''}`;
  const shown = lines.length > MAX_SHOWN ? [...lines.slice(0, MAX_SHOWN), `... ${lines.length - MAX_SHOWN} more`] : lines;
  return [head, ...shown.map((l) => `  ${l}`)].join('\n');
}

/** iptables-restore's own words, what the line it names is, and what to do about it. */
function refused(error: CommandError, command: string, lines: readonly string[], spec: IptablesSpec): Error {
  const said = error.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('Try `'));
  const at = /line:? (\d+)/.exec(error.stderr)?.[1];
  const line = at ? (lines[Number(at) - 1] ?? '') : '';
  const rule = spec.rules.findIndex((args) => line === `-A ${spec.chain} ${joinArgs([...tagArgs(ruleTag(args)), ...args])}`);
  // nft checks jump targets at COMMIT, so its line number does not say which rule: the chain's name does
  const missing = /Chain '([^']+)' does not exist/.exec(error.stderr)?.[1];
  const jumper = missing ? spec.rules.findIndex((args) => jumpTarget(args) === missing) : -1;
  let hint = 'check the rules in the spec: iptables says the same when given them by hand';
  if (rule >= 0) hint = `line ${at} is rules[${rule}]: ${joinArgs(spec.rules[rule]!)}\n  fix that rule in the spec`;
  else if (jumper >= 0)
    hint = `rules[${jumper}] jumps to ${missing}, which does not exist yet\n  declare the Iptables resource that owns ${missing} before this one`;
  else if (line.startsWith('-D ')) hint = 'a jump into the chain changed while meshvm was reading it; run again';
  else if (line.startsWith('-X ')) hint = `another chain still jumps to ${spec.chain}; remove that rule, then run again`;
  return new Error(
    `\`${command} --noflush\` refused the change; nothing was changed (a restore is all or nothing):\n${indent(said.slice(-6).join('\n'))}\n  ${hint}`,
  );
}

export const iptablesType = {
  kind: 'iptables',
  readAhead: true,
  schema: iptablesSpec,
  key: (spec: IptablesSpec) => `${spec.ipv6 ? 'ipv6/' : ''}${spec.table ?? 'filter'}/${spec.chain}`,

  async current(host: HostReader, spec: IptablesSpec): Promise<IptablesState | undefined> {
    return readChainState(spec, (await readTables(host, spec.ipv6)).get(spec.table));
  },

  // ours are told apart by the tag each rule carries (a hash of the rule as declared), never by normalising iptables-save's rewrite of it
  changes(spec: IptablesSpec, current: IptablesState | undefined): Changes<IptablesState> {
    if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
    const changes: Changes<IptablesState> = {};
    const rules = desiredRules(spec);
    if (!current) changes.ensure = { from: 'absent', to: 'present' };
    if (!sameRules(current?.rules ?? [], rules)) changes.rules = { from: current?.rules, to: rules };
    const jump = desiredJump(spec);
    if ((current?.jump ?? 'none') !== jump) changes.jump = { from: current?.jump, to: jump };
    return changes;
  },

  async apply(host: Host, spec: IptablesSpec, changes: Changes<IptablesState>, current: IptablesState | undefined): Promise<void> {
    const { backend } = await detectBackend(host);
    const { restore } = backendCommands(backend, spec.ipv6);
    const input: RestoreInput = { table: spec.table, chain: spec.chain };
    if (spec.ensure === 'absent') {
      input.deletes = current?.jumps ?? [];
      input.removeChain = true;
    } else {
      // declare-and-refill: under --noflush, ":CHAIN - [0:0]" creates or empties only this chain, in the same transaction
      if (changes.ensure || changes.rules) input.refill = spec.rules.map((args) => [...tagArgs(ruleTag(args)), ...args]);
      if (changes.jump) {
        input.deletes = jumpsToFix(spec, current?.jumps ?? []);
        if (spec.from) input.jump = { chain: spec.from.chain, position: spec.from.position, args: [...tagArgs(jumpTag(spec)), ...jumpArgs(spec)] };
      }
    }
    const { text, lines } = renderRestore(input);
    try {
      await host.run([restore, '--noflush', '--wait=30'], { input: text });
    } catch (error) {
      if (error instanceof CommandError && error.exitCode !== undefined) throw refused(error, restore, lines, spec);
      throw error;
    }
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field === 'ensure') return change.to === 'absent' ? 'remove the chain and every jump into it from built-in chains' : 'create the chain';
    if (field === 'rules') return describeRules(change.from as RuleEntry[] | undefined, change.to as RuleEntry[]);
    if (field !== 'jump') return undefined;
    const from = change.from as string | undefined;
    const to = change.to as string;
    if (to === 'none') return `remove the jump ${from}`;
    if (!from || from === 'none') return `add the jump from ${to}`;
    return `fix the jump from ${to} (found ${from})`;
  },
};

export const Iptables = defineResource(iptablesType);
