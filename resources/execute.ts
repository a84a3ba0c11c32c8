// Execute: the escape hatch: a command (argv, or a shell script when the spec says shell: true) run only when its guards say it is needed, or when notified.
import { z } from 'zod';
import { defineResource, type Action, type Applied, type Changes } from '../engine/resource.ts';
import { guestPath } from '../engine/validate.ts';
import { errorMessage, indent, lastLines } from '../engine/errors.ts';
import type { CommandResult, Host, HostReader } from '../engine/host.ts';

const OUTPUT_LINES = 10;

const argv = z
  .array(z.string().refine((word) => !word.includes('\0'), 'must not contain a NUL byte'))
  .min(1, 'expected a command: a list of words, the program first');

export const executeSpec = z
  .strictObject({
    /** The ref: execute[<name>]; by default the command line (required for scripts and sensitive commands). */
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9 ._:/@+=,-]*$/, 'expected letters, digits, spaces and . _ : / @ + = , -')
      .max(120)
      .optional(),
    /** argv, run without a shell. */
    command: argv.optional(),
    /** Run `script` with /bin/sh -c instead of a command; only when said explicitly. */
    shell: z.boolean().default(false),
    script: z.string().min(1, 'the script is empty').optional(),
    /** A guest path the command creates: it runs only while the path does not exist. */
    creates: guestPath.optional(),
    /** argv run first (also in plan; it must change nothing): the command runs only if this exits 0. */
    onlyIf: argv.optional(),
    /** argv run first (also in plan; it must change nothing): the command runs only if this exits non-zero. */
    notIf: argv.optional(),
    /** Never run on converge, only when a changed resource notifies it. */
    onlyWhenNotified: z.boolean().default(false),
    /** Added to the environment of the command and its guards. */
    env: z
      .record(z.string(), z.string())
      .superRefine((env, ctx) => {
        for (const key of Object.keys(env)) {
          if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key))
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message: `"${key}" is not an environment variable name (letters, digits and "_", not starting with a digit)`,
            });
        }
      })
      .optional(),
    /** Working directory of the command and its guards (a guest path: under --root, inside the root). */
    cwd: guestPath.optional(),
    /**
     * Run the command and its guards on this machine even under --root (a tool that takes the root as an argument).
     * By default they run inside the root: under --root confined to it, and refused when the root has no such program.
     */
    onHost: z.boolean().default(false),
    /** Stop the command (and each guard) after this long; 300 by default. */
    timeoutSeconds: z.number().positive('timeoutSeconds must be more than 0').max(86_400).optional(),
    /** The command, script and environment are secrets: never shown in plan, reports or errors. */
    sensitive: z.boolean().default(false),
  })
  .superRefine((spec, ctx) => {
    const problem = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: path ? [path] : [], message });
    if (spec.shell) {
      if (spec.command) problem('command', 'with shell: true give a script, not a command');
      if (!spec.script) problem('script', 'shell: true runs a script: give one');
      if (!spec.name) problem('name', 'a script needs a name, for its ref');
    } else {
      if (spec.script) problem('shell', 'a script runs only when the spec says shell: true');
      else if (!spec.command) problem('command', 'give a command (a list of words), or shell: true and a script');
    }
    if (spec.sensitive && !spec.name) problem('name', 'a sensitive command needs a name, so that its ref does not show it');
    const guarded = spec.creates !== undefined || spec.onlyIf !== undefined || spec.notIf !== undefined;
    if (spec.onlyWhenNotified && guarded)
      problem('onlyWhenNotified', 'a command run only when notified has no use for creates, onlyIf or notIf: a notification always runs it');
    if (!spec.onlyWhenNotified && !guarded) {
      problem(
        '',
        "nothing says when it is needed, so it would run on every converge: give creates, onlyIf or notIf, or onlyWhenNotified: true (to run it every time on purpose, say onlyIf: ['true'])",
      );
    }
  });
export type ExecuteSpec = z.output<typeof executeSpec>;

/** What the guards found, in order; a guard after one that already said "not needed" is not run. */
export interface ExecuteState {
  /** Whether the path of `creates` exists. */
  created?: boolean;
  /** Exit codes of the guards that ran. */
  onlyIf?: number;
  notIf?: number;
}

function quote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** How the command reads in plan lines and errors. */
export function showCommand(spec: ExecuteSpec): string {
  if (spec.sensitive) return '(sensitive command)';
  if (spec.shell) {
    const lines = spec.script!.trim().split('\n');
    return `sh -c ${quote(lines[0]! + (lines.length > 1 ? ` … (${lines.length} lines)` : ''))}`;
  }
  return spec.command!.map(quote).join(' ');
}

const showArgv = (spec: ExecuteSpec, words: readonly string[]) => (spec.sensitive ? '' : ` \`${words.map(quote).join(' ')}\``);

/** Where the command and its guards run (inside the root unless onHost), their cwd, environment and time limit. */
const commandOptions = (spec: ExecuteSpec) => ({
  in: spec.onHost ? ('host' as const) : ('root' as const),
  ...(spec.cwd !== undefined && { cwd: spec.cwd }),
  ...(spec.env && { env: spec.env }),
  ...(spec.timeoutSeconds !== undefined && { timeoutMs: Math.round(spec.timeoutSeconds * 1000) }),
});

function notRun(spec: ExecuteSpec, what: string, error: unknown): Error {
  const message = errorMessage(error);
  if (/timed out/i.test(message)) return new Error(`${what} did not finish within ${spec.timeoutSeconds ?? 300}s and was stopped`);
  return new Error(`${what} could not be run${spec.sensitive ? '' : `: ${message}`}`);
}

/** Runs a guard (a read-only command) and says whether it exited 0. */
async function guard(host: HostReader, spec: ExecuteSpec, name: 'onlyIf' | 'notIf', words: readonly string[]): Promise<CommandResult> {
  try {
    return await host.query(words, commandOptions(spec));
  } catch (error) {
    throw notRun(spec, `the ${name} guard${showArgv(spec, words)}`, error);
  }
}

/** Runs the guards in order, stopping at the first that says the command is not needed. */
async function readGuards(host: HostReader, spec: ExecuteSpec): Promise<ExecuteState> {
  const state: ExecuteState = {};
  if (spec.onlyWhenNotified) return state;
  if (spec.creates !== undefined) {
    state.created = (await host.stat(spec.creates)) !== undefined;
    if (state.created) return state;
  }
  if (spec.onlyIf) {
    state.onlyIf = (await guard(host, spec, 'onlyIf', spec.onlyIf)).exitCode;
    if (state.onlyIf !== 0) return state;
  }
  if (spec.notIf) state.notIf = (await guard(host, spec, 'notIf', spec.notIf)).exitCode;
  return state;
}

/** Why the command must run, from what the guards found; undefined when it need not. */
function whyRun(spec: ExecuteSpec, state: ExecuteState | undefined): string | undefined {
  if (spec.onlyWhenNotified || !state) return undefined;
  const reasons: string[] = [];
  if (spec.creates !== undefined) {
    if (state.created !== false) return undefined;
    reasons.push(`${spec.creates} does not exist`);
  }
  if (spec.onlyIf) {
    if (state.onlyIf !== 0) return undefined;
    reasons.push(`onlyIf${showArgv(spec, spec.onlyIf)} succeeded`);
  }
  if (spec.notIf) {
    if (state.notIf === undefined || state.notIf === 0) return undefined;
    reasons.push(`notIf${showArgv(spec, spec.notIf)} exited ${state.notIf}`);
  }
  return reasons.join(', ');
}

function outputTail(result: CommandResult): string {
  const parts: string[] = [];
  for (const [name, text] of [
    ['stderr', result.stderr],
    ['stdout', result.stdout],
  ] as const) {
    const tail = lastLines(text.trimEnd(), OUTPUT_LINES);
    if (tail.trim()) parts.push(`${name} (last lines):\n${indent(tail)}`);
  }
  return parts.length ? `\n${indent(parts.join('\n'))}` : ' and printed nothing';
}

async function runCommand(host: Host, spec: ExecuteSpec): Promise<void> {
  const words = spec.shell ? ['/bin/sh', '-c', spec.script!] : spec.command!;
  let result: CommandResult;
  try {
    result = await host.run(words, { ...commandOptions(spec), allowFailure: true });
  } catch (error) {
    throw notRun(spec, `\`${showCommand(spec)}\``, error);
  }
  if (result.exitCode !== 0) throw new Error(`\`${showCommand(spec)}\` exited ${result.exitCode}${outputTail(result)}`);
}

export const executeType = {
  kind: 'execute',
  schema: executeSpec,
  key: (spec: ExecuteSpec) => spec.name ?? (spec.sensitive ? '(sensitive)' : spec.command ? spec.command.join(' ') : 'script'),
  sensitive: (spec: ExecuteSpec) => (spec.sensitive ? (['command', 'script', 'env'] as const).filter((field) => spec[field] !== undefined) : []),

  current: readGuards,

  /** A command has no state to compare: running it is an action. */
  changes: (): Changes<ExecuteState> => ({}),

  actions(spec: ExecuteSpec, current: ExecuteState | undefined): Action[] {
    const why = whyRun(spec, current);
    if (why === undefined) return [];
    return [{ action: `run \`${showCommand(spec)}\` (${why})`, run: (host) => runOnce(host, spec) }];
  },

  /** A notification runs the command whatever the guards say: a change is the reason to run it again (once a run). */
  async refresh(host: Host, spec: ExecuteSpec, applied: Applied<ExecuteState> | undefined): Promise<void | 'not-needed'> {
    if (applied?.actions.length) return 'not-needed';
    await runCommand(host, spec);
  },
};

async function runOnce(host: Host, spec: ExecuteSpec): Promise<void> {
  await runCommand(host, spec);
  if (spec.creates !== undefined && !(await host.stat(spec.creates))) {
    throw new Error(
      `\`${showCommand(spec)}\` succeeded but ${spec.creates} still does not exist, so every run would run it again: make the command create it, or fix creates`,
    );
  }
}

export const Execute = defineResource(executeType);
