// Pure iptables text: rule arguments split and quoted as iptables-restore does, iptables-save parsed, restore input rendered, the backend chosen.
import { createHash } from 'node:crypto';

export const TABLES = ['filter', 'nat', 'mangle', 'raw'] as const;
export type Table = (typeof TABLES)[number];

/** The chains the kernel creates in each table; meshvm never owns one of them. */
export const BUILTIN_CHAINS: Readonly<Record<Table, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};
const BUILTIN_NAMES = new Set(Object.values(BUILTIN_CHAINS).flat());

/** Standard targets: iptables refuses a chain named like one ("chain name may not clash with target name"). */
const TARGET_NAMES = new Set(
  'ACCEPT DROP RETURN QUEUE NFQUEUE REJECT LOG NFLOG ULOG DNAT SNAT MASQUERADE REDIRECT NETMAP MARK CONNMARK CONNSECMARK SECMARK TPROXY TRACE CT NOTRACK TCPMSS TCPOPTSTRIP DSCP TOS TTL HL ECN CLASSIFY SET AUDIT CHECKSUM IDLETIMER LED RATEEST TEE SYNPROXY HMARK CLUSTERIP'.split(
    ' ',
  ),
);

/** iptables keeps chain names in 29 bytes including the terminating NUL. */
export const MAX_CHAIN_NAME = 28;

/** Why iptables (or meshvm) would refuse this as a chain meshvm owns; undefined when it is fine. */
export function chainNameProblem(name: string): string | undefined {
  if (name === '') return 'a chain name must not be empty';
  if (name.length > MAX_CHAIN_NAME) return `chain name "${name}" is ${name.length} characters; iptables allows at most ${MAX_CHAIN_NAME}`;
  if (BUILTIN_NAMES.has(name)) return `${name} is a built-in chain; meshvm owns only chains it creates (jump into yours with "from")`;
  if (TARGET_NAMES.has(name)) return `${name} is the name of a target; iptables refuses a chain named like one`;
  if (/^[-!]/.test(name)) return `chain name "${name}" must not start with "${name[0]}"`;
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) return `chain name "${name}" may hold only letters, digits, "_", "-" and "." (such as MESHVM_INBOUND)`;
  return undefined;
}

/**
 * Splits a rule the way iptables-restore does: spaces separate, a double quote groups up to the next
 * unescaped one (backslash escapes inside quotes only), and a closing quote ends the argument.
 */
export function splitArgs(text: string): string[] {
  const args: string[] = [];
  let current = '';
  let started = false;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < text.length) current += text[++i];
      else if (c === '"') {
        quoted = false;
        args.push(current);
        current = '';
        started = false;
      } else current += c;
    } else if (c === '"') {
      quoted = true;
      started = true;
    } else if (c === ' ' || c === '\t') {
      if (started) args.push(current);
      current = '';
      started = false;
    } else {
      current += c;
      started = true;
    }
  }
  if (quoted) throw new Error('a double quote is not closed');
  if (started) args.push(current);
  return args;
}

/** One argument as iptables-restore reads it back: bare when it can be, else double-quoted with \ and " escaped. */
export function quoteArg(arg: string): string {
  if (arg !== '' && !/[\s"'\\]/.test(arg)) return arg;
  return `"${arg.replace(/[\\"]/g, '\\$&')}"`;
}

export function joinArgs(args: readonly string[]): string {
  return args.map(quoteArg).join(' ');
}

export interface SavedRule {
  chain: string;
  /** The rule's arguments after `-A CHAIN`. */
  args: string[];
  /** The rule exactly as iptables-save printed it after `-A CHAIN ` (valid iptables-restore input). */
  text: string;
}

export interface SavedTable {
  /** Chain name to policy ("-" for a user chain), in the order printed. */
  chains: Map<string, string>;
  /** Every rule in the order printed (per chain, the order the kernel evaluates them). */
  rules: SavedRule[];
}

/** iptables-save (or ip6tables-save) output, with or without -c, by table; comments and warnings skipped. */
export function parseIptablesSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let table: SavedTable | undefined;
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.replace(/^\[\d+:\d+\]\s+/, '').trimEnd();
    if (line === '' || line.startsWith('#')) continue;
    const where = () => `iptables-save line ${index + 1}: "${raw}"`;
    if (line.startsWith('*')) {
      table = { chains: new Map(), rules: [] };
      tables.set(line.slice(1).trim(), table);
    } else if (line === 'COMMIT') {
      table = undefined;
    } else if (!table) {
      throw new Error(`${where()} is outside a table`);
    } else if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      if (!name) throw new Error(`${where()} declares no chain`);
      table.chains.set(name, policy ?? '-');
    } else if (line.startsWith('-A ')) {
      const match = /^-A\s+(\S+)\s*(.*)$/.exec(line)!;
      table.rules.push({ chain: match[1]!, args: splitArgs(match[2]!), text: match[2]! });
    } else {
      throw new Error(`${where()} is not a chain or an appended rule`);
    }
  }
  return tables;
}

/** Lines that are rules (`-A ...`): what the backend heuristic counts. */
export function countRuleLines(text: string): number {
  let count = 0;
  for (const line of text.split('\n')) if (line.startsWith('-')) count++;
  return count;
}

export const TAG_PREFIX = 'meshvm:';
const TAG = /^meshvm:[0-9a-f]{12}$/;

/**
 * The comment meshvm puts on a rule: a hash of the rule as the spec writes it. iptables-save rewrites
 * rules (`--dport 80` comes back as `-m tcp --dport 80`), but it keeps a comment verbatim on every version.
 */
export function ruleTag(args: readonly string[]): string {
  return TAG_PREFIX + createHash('sha256').update(JSON.stringify(args)).digest('hex').slice(0, 12);
}

/** The arguments meshvm adds in front of a rule it owns. */
export function tagArgs(tag: string): string[] {
  return ['-m', 'comment', '--comment', tag];
}

/** meshvm's tag on a saved rule, if it has one. */
export function findTag(args: readonly string[]): string | undefined {
  for (let i = 0; i + 1 < args.length; i++) if (args[i] === '--comment' && TAG.test(args[i + 1]!)) return args[i + 1];
  return undefined;
}

/** A saved rule without meshvm's `-m comment --comment meshvm:...`, for showing it to people. */
export function withoutTag(args: readonly string[]): string[] {
  for (let i = 0; i + 3 < args.length; i++) {
    if (args[i] === '-m' && args[i + 1] === 'comment' && args[i + 2] === '--comment' && TAG.test(args[i + 3]!)) {
      return [...args.slice(0, i), ...args.slice(i + 4)];
    }
  }
  return [...args];
}

/** The chain a rule jumps or goes to (`-j X`, `-g X`). */
export function jumpTarget(args: readonly string[]): string | undefined {
  for (let i = 0; i + 1 < args.length; i++) {
    if (args[i] === '-j' || args[i] === '--jump' || args[i] === '-g' || args[i] === '--goto') return args[i + 1];
  }
  return undefined;
}

export type Backend = 'nft' | 'legacy' | 'plain';

export interface BackendEvidence {
  /** `-` lines in iptables-legacy-save + ip6tables-legacy-save; undefined when neither could run. */
  legacyRules: number | undefined;
  /** The same for the nft variants; undefined when neither could run (or it was not asked: legacy already won). */
  nftRules: number | undefined;
  /** What the distribution's plain `iptables` is, asked only on a tie. */
  systemDefault?: 'nft' | 'legacy' | undefined;
}

/**
 * The kubernetes iptables-wrappers heuristic: 10 or more legacy rules means legacy; otherwise the backend
 * holding more rules. On a tie (a fresh host: none anywhere) we take the distribution's default rather
 * than the wrapper's legacy, so Docker, istio-iptables and the admin's `iptables` see meshvm's rules.
 * Without the -nft/-legacy variants (iptables < 1.8) only plain iptables-save/-restore exist.
 */
export function chooseBackend(evidence: BackendEvidence): Backend {
  const { legacyRules: legacy, nftRules: nft } = evidence;
  if (legacy === undefined && nft === undefined) return 'plain';
  if (nft === undefined) return 'legacy';
  if (legacy === undefined) return 'nft';
  if (legacy >= 10 || legacy > nft) return 'legacy';
  if (nft > legacy) return 'nft';
  return evidence.systemDefault ?? 'legacy';
}

/** Whether a legacy count alone decides (the wrapper then never runs the nft tools). */
export function legacyDecides(legacyRules: number | undefined): boolean {
  return legacyRules !== undefined && legacyRules >= 10;
}

/** `iptables v1.8.9 (nf_tables)` / `(legacy)`: which backend the plain command uses. */
export function parseVersionBackend(text: string): 'nft' | 'legacy' | undefined {
  if (/\(nf_tables\)/.test(text)) return 'nft';
  if (/\(legacy\)/.test(text)) return 'legacy';
  return undefined;
}

export function backendCommands(backend: Backend, ipv6: boolean): { save: string; restore: string } {
  const base = ipv6 ? 'ip6tables' : 'iptables';
  const variant = backend === 'plain' ? '' : `-${backend}`;
  return { save: `${base}${variant}-save`, restore: `${base}${variant}-restore` };
}

export interface RestoreInput {
  table: Table;
  chain: string;
  /** Declare the chain (creating it, or flushing it under --noflush) and append these full rules, tag included. */
  refill?: string[][];
  /** Rules to delete from built-in chains, as iptables-save printed them. */
  deletes?: { chain: string; text: string }[];
  /** The one jump to add: inserted first or appended last. */
  jump?: { chain: string; position: 'first' | 'last'; args: string[] };
  /** Empty and delete the chain (after the deletes). */
  removeChain?: boolean;
}

/** iptables-restore --noflush input touching only the owned chain and the given jumps; what each line is, for errors. */
export function renderRestore(input: RestoreInput): { text: string; lines: string[] } {
  const lines = [`*${input.table}`];
  if (input.refill || input.removeChain) lines.push(`:${input.chain} - [0:0]`);
  for (const rule of input.deletes ?? []) lines.push(`-D ${rule.chain} ${rule.text}`);
  for (const args of input.refill ?? []) lines.push(`-A ${input.chain} ${joinArgs(args)}`);
  if (input.jump) {
    const { chain, position, args } = input.jump;
    lines.push(`${position === 'first' ? `-I ${chain} 1` : `-A ${chain}`} ${joinArgs(args)}`);
  }
  if (input.removeChain) lines.push(`-X ${input.chain}`);
  lines.push('COMMIT');
  return { text: lines.join('\n') + '\n', lines };
}

/** What an Iptables spec asks for, as the state functions read it. */
export interface OwnedChain {
  table: Table;
  chain: string;
  rules: readonly (readonly string[])[];
  from?: { chain: string; position: 'first' | 'last'; match: readonly string[] } | undefined;
  ensure: 'present' | 'absent';
}

/** One rule of the owned chain: meshvm's tag (undefined on a rule someone else added) and how it reads. */
export interface RuleEntry {
  tag: string | undefined;
  rule: string;
}

/** A rule in a built-in chain that jumps into the owned chain. */
export interface JumpRule {
  chain: string;
  /** As iptables-save printed it (what `-D` is given). */
  text: string;
  args: string[];
  /** meshvm's tag on it; undefined when someone else added it. */
  tag: string | undefined;
  /** 1-based position in its chain, and the chain's length. */
  index: number;
  of: number;
}

export interface IptablesState {
  ensure: 'present' | 'absent';
  rules: RuleEntry[];
  /** How the jump reads when it is in place, or what was found instead ("none" when there is none). */
  jump: string;
  /** Every jump into the chain from a built-in chain: what apply deletes before adding the one. Never compared. */
  jumps: JumpRule[];
}

export const jumpArgs = (spec: OwnedChain) => [...(spec.from?.match ?? []), '-j', spec.chain];
export const jumpTag = (spec: OwnedChain) => ruleTag(['jump', spec.from?.chain ?? '', ...jumpArgs(spec)]);
export const desiredJump = (spec: OwnedChain) => (spec.from ? `${spec.from.chain} (${spec.from.position}): ${joinArgs(jumpArgs(spec))}` : 'none');
export const desiredRules = (spec: OwnedChain): RuleEntry[] => spec.rules.map((args) => ({ tag: ruleTag(args), rule: joinArgs(args) }));

/** The jumps meshvm answers for: every one into its chain when the spec has a jump (or removes the chain), else only those it tagged. */
export const jumpsToFix = (spec: OwnedChain, jumps: JumpRule[]) => (spec.from || spec.ensure === 'absent' ? jumps : jumps.filter((j) => j.tag !== undefined));

/** Same rules in the same order: compared by tag, so iptables-save's rewriting of a rule never reads as a change. */
export function sameRules(have: readonly RuleEntry[], want: readonly RuleEntry[]): boolean {
  return have.length === want.length && have.every((r, i) => r.tag !== undefined && r.tag === want[i]!.tag);
}

/** The owned chain and the jumps into it, from one table of a parsed iptables-save; undefined when the chain is absent. */
export function readChainState(spec: OwnedChain, table: SavedTable | undefined): IptablesState | undefined {
  if (!table?.chains.has(spec.chain)) return undefined;
  const builtins = new Set(BUILTIN_CHAINS[spec.table]);
  const lengths = new Map<string, number>();
  for (const rule of table.rules) lengths.set(rule.chain, (lengths.get(rule.chain) ?? 0) + 1);
  const seen = new Map<string, number>();
  const rules: RuleEntry[] = [];
  const jumps: JumpRule[] = [];
  const tagged: boolean[] = []; // per rule of the chain the jump comes from: does meshvm own it?
  for (const rule of table.rules) {
    const index = (seen.get(rule.chain) ?? 0) + 1;
    seen.set(rule.chain, index);
    const tag = findTag(rule.args);
    if (rule.chain === spec.chain) rules.push({ tag, rule: joinArgs(withoutTag(rule.args)) });
    if (rule.chain === spec.from?.chain) tagged.push(tag !== undefined);
    if (builtins.has(rule.chain) && jumpTarget(rule.args) === spec.chain) {
      jumps.push({ chain: rule.chain, text: rule.text, args: rule.args, tag, index, of: lengths.get(rule.chain)! });
    }
  }
  return { ensure: 'present', rules, jump: jumpSummary(spec, jumps, tagged), jumps };
}

function jumpSummary(spec: OwnedChain, jumps: JumpRule[], tagged: boolean[]): string {
  const found = jumpsToFix(spec, jumps);
  if (found.length === 0) return 'none';
  const from = spec.from;
  let misplaced = false;
  if (from && found.length === 1) {
    const jump = found[0]!;
    // "first": only meshvm's rules (other resources' jumps) ahead of it; "last": only meshvm's behind it. So two resources never fight.
    const around = from.position === 'first' ? tagged.slice(0, jump.index - 1) : tagged.slice(jump.index);
    misplaced = jump.chain === from.chain && !around.every(Boolean);
    if (jump.chain === from.chain && jump.tag === jumpTag(spec) && !misplaced) return desiredJump(spec);
  }
  const why = (j: JumpRule) =>
    !j.tag ? ' (not added by meshvm)' : misplaced ? ` (${from!.position === 'first' ? 'behind' : 'ahead of'} rules meshvm does not own)` : '';
  const shown = found.map((j) => `${j.chain} rule ${j.index} of ${j.of}: ${joinArgs(withoutTag(j.args))}${why(j)}`);
  return found.length === 1 ? shown[0]! : `${found.length} jumps: ${shown.join('; ')}`;
}
