// The resource contract (read, diff, apply, refresh) and defineResource, which turns a type into a declaration function.
import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import type { Host, HostReader } from './host.ts';
import { InputError } from './errors.ts';
import { secrets } from './secrets.ts';
import { formatIssue } from './validate.ts';

/** What differs, field by field; {} means converged. */
export type Changes<State> = { [F in keyof State]?: { from: State[F] | undefined; to: State[F] } };

/**
 * Something a resource will do besides changing state: run a command, restart a service, mint a token. Plan prints it,
 * converge does it, and the report records it.
 */
export interface Action {
  /** How it reads in plan and report: "restart systemd-resolved (`systemctl try-restart systemd-resolved`)". */
  readonly action: string;
  /** Why it will not be done here (an offline root, no systemd): plan and report say so and it is skipped. */
  readonly skip?: string | undefined;
  run(host: Host): Promise<void>;
}

/**
 * What a resource needs before it can converge: an account, a path (its parent directory), or the running system (it
 * cannot work in an offline root; `live` says why, for the error).
 */
export type Requirement = { account: 'user' | 'group'; name: string } | { path: string } | { live: string };
/** What a resource makes exist: declared before a resource that requires it, it satisfies that requirement. */
export type Provision = { account: 'user' | 'group'; name: string } | { path: string };

/** What prepare is told: the mode, and where to record what it created (removed again when a later preflight fails). */
export interface PrepareContext {
  readonly mode: 'plan' | 'converge';
  /** A path (guest) this preflight created, a cache entry: removed again if the preflight fails. */
  created(path: string): void;
  /** Makes a directory and its missing parents (mode 0755), each recorded as created; converge only. */
  directory(path: string): Promise<void>;
}

/** What converge did to a resource this run, given to refresh: the changes applied and the actions run. */
export interface Applied<State> {
  changes: Changes<State>;
  actions: readonly string[];
}

export interface ResourceType<Spec, State> {
  /** The word in the ref: "file" in file[/etc/hosts]. */
  kind: string;
  /** Validates a declaration; its errors name the resource ref and the field. */
  schema: z.ZodType<Spec>;
  /** Identity on the machine. */
  key(spec: Spec): string;
  /** Reads only; undefined means absent. What a composite reads here (a detection) is given to children(). */
  current(host: HostReader, spec: Spec): Promise<State | undefined>;
  /**
   * current() reads only this machine, and everything that changes it goes through the host (writes, commands): the
   * runner may then read it while earlier resources converge, and reads it again after any change.
   */
  readAhead?: boolean;
  /** Pure; compares only the state fields the spec sets. Effects are actions, not changes. */
  changes(spec: Spec, current: State | undefined): Changes<State>;
  /** Converges only what differs (called only when changes() found something). */
  apply?(host: Host, spec: Spec, changes: Changes<State>, current: State | undefined): Promise<void>;
  /**
   * Preflight: fetches and checks what apply will need (a download verified into a cache, a file read) once the run is
   * planned and before the first resource changes, in plan and converge alike (plan checks without writing). Throw to
   * stop the run with nothing changed; return a line saying what was checked (or could not be, in plan).
   */
  prepare?(host: Host, spec: Spec, context: PrepareContext): Promise<string | undefined | void>;
  /** What it will do besides changing state (run a command), from what was read; done after apply. */
  actions?(spec: Spec, current: State | undefined, changes: Changes<State>): readonly Action[];
  /**
   * A composite: the resources it is made of, from its spec and what current() read, converged in order with the same
   * plan/apply/report semantics (refs nest: `resolv_conf[meshvm] > file[/etc/resolv.conf]`). An Action among them runs
   * when a child before it (since the previous action) changed.
   */
  children?(spec: Spec, current: State | undefined): readonly (Declaration | Action)[];
  /** What "notified" means (restart, reload, re-run); `applied` is what this run did to it. 'not-needed' when that did it already. */
  refresh?(host: Host, spec: Spec, applied: Applied<State> | undefined): Promise<void | 'not-needed'>;
  /** Spec fields that are secrets: never shown in output, reports or errors. */
  sensitive?(spec: Spec): readonly (keyof Spec & string)[];
  /** Accounts and paths it needs (Puppet's autorequire): checked before anything changes. */
  requires?(spec: Spec): readonly Requirement[];
  /** Accounts and paths it makes exist. */
  provides?(spec: Spec): readonly Provision[];
  /** Plan/report line for a changed field when the generic one does not read well. */
  describe?(field: keyof State & string, change: { from: unknown; to: unknown }): string | undefined;
  /** How a value of a field reads in the generic line (a mode as 0644). */
  format?(field: keyof State & string, value: unknown): string | undefined;
  /** When what it keeps on the machine stops being good (a certificate, a token), read after a converge for the run's status. */
  expiry?(host: HostReader, spec: Spec): Promise<Expiry | undefined>;
  /** The changes are a renewal the kind makes on schedule (a token re-minted before it expires), not drift. */
  renewal?(changes: Changes<State>): boolean;
}

/** A certificate's or a token's end of validity, as the run's status (metrics, the fleet view) shows it. */
export interface Expiry {
  what: 'certificate' | 'token';
  at: Date;
}

/** What a recipe (or a composite's children) returns: declarations, nested lists, and falsy values a condition left out. */
export type Declaration = Declared | readonly Declaration[] | undefined | null | false | '';

export interface Declared<Spec = any, State = any> {
  readonly type: ResourceType<Spec, State>;
  readonly spec: Spec;
  readonly ref: string;
  /** The recipe line that declared it: "recipes/dns.ts:24". */
  readonly declaredAt: string | undefined;
  readonly notifies: readonly Declared[];
  readonly refreshable: boolean;
  /** The composite this is part of (its ref), when it is a child. */
  readonly partOf?: string;
}

/** A declaration whose kind can be notified. */
export type Notifiable = Declared & { readonly refreshable: true };

export interface DeclareOptions {
  /** Refreshed once at the end of the run if this resource changed. */
  notifies?: Notifiable | readonly Notifiable[];
}

export function isAction(value: unknown): value is Action {
  return typeof value === 'object' && value !== null && typeof (value as Action).action === 'string' && typeof (value as Action).run === 'function';
}

/** Declarations flattened in order, falsy ones left out. */
export function flatten(declaration: Declaration): Declared[] {
  if (!declaration) return [];
  if (Array.isArray(declaration)) return (declaration as readonly Declaration[]).flatMap(flatten);
  return [declaration as Declared];
}

type DeclareFn<Spec, State, R extends boolean> = (input: any, options?: DeclareOptions) => Declared<Spec, State> & { readonly refreshable: R };
type Factory<Schema extends z.ZodType, State, R extends boolean> = (
  input: z.input<Schema>,
  options?: DeclareOptions,
) => Declared<z.output<Schema>, State> & { readonly refreshable: R };

/** Turns a resource type into the function recipes call: `File({ path, content }, { notifies: service })`. */
export function defineResource<Schema extends z.ZodType, State>(
  type: ResourceType<z.output<Schema>, State> & {
    schema: Schema;
    refresh(host: Host, spec: z.output<Schema>, applied: Applied<State> | undefined): Promise<void | 'not-needed'>;
  },
): Factory<Schema, State, true>;
export function defineResource<Schema extends z.ZodType, State>(
  type: ResourceType<z.output<Schema>, State> & { schema: Schema },
): Factory<Schema, State, false>;
export function defineResource<Spec, State>(type: ResourceType<Spec, State>): DeclareFn<Spec, State, boolean> {
  const refreshable = typeof type.refresh === 'function';
  const definedIn = callerFile();
  if (definedIn) DEFINING_FILES.add(definedIn);
  return function declare(input, options = {}) {
    const declaredAt = callerLocation();
    const tentativeRef = `${type.kind}[${guessKey(type, input)}]`;
    const parsed = type.schema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new InputError(tentativeRef + (declaredAt ? ` (declared at ${declaredAt})` : ''), formatIssue(issue));
    }
    const spec = parsed.data;
    for (const field of type.sensitive?.(spec) ?? []) secrets.add((spec as Record<string, unknown>)[field]);
    const notifies = options.notifies === undefined ? [] : Array.isArray(options.notifies) ? options.notifies : [options.notifies as Notifiable];
    const ref = `${type.kind}[${type.key(spec)}]`;
    for (const target of notifies) {
      if (!target?.refreshable) {
        throw new InputError(
          ref,
          `notifies ${target?.ref ?? String(target)}, whose kind has no refresh (only services, commands and the like can be notified)`,
        );
      }
    }
    return { type, spec, ref, declaredAt, notifies, refreshable };
  };
}

function guessKey(type: { key(spec: any): string }, input: unknown): string {
  try {
    return type.key(input);
  } catch {
    return '?';
  }
}

/** Compares the fields a spec sets against the current state; absent state means every set field changes. */
export function compareFields<Spec extends object, State extends object>(
  spec: Spec,
  current: State | undefined,
  fields: readonly (keyof Spec & keyof State)[],
): Changes<State> {
  const changes: Changes<State> = {};
  for (const field of fields) {
    const want = spec[field] as unknown;
    if (want === undefined) continue;
    const have = current?.[field] as unknown;
    if (!isDeepStrictEqual(want, have)) {
      (changes as Record<string, unknown>)[field as string] = { from: have, to: want };
    }
  }
  return changes;
}

export function hasChanges(changes: object): boolean {
  return Object.keys(changes).length > 0;
}

const ENGINE_DIR = new URL('.', import.meta.url).pathname;
/** The modules that define resource kinds (they called defineResource): a declaration is never located in them. */
const DEFINING_FILES = new Set<string>();

/** The module that called defineResource. */
function callerFile(): string | undefined {
  return firstFrameOutside(callerFile, () => false)?.file;
}

/** The first stack frame outside the engine and the modules that define kinds: where a recipe declared something. */
function callerLocation(): string | undefined {
  const site = firstFrameOutside(callerLocation, (file) => DEFINING_FILES.has(file));
  return site && `${relativeToCwd(site.file)}:${site.line}`;
}

/** The first caller frame (above `from`) not in the engine, node's own modules, or a file `skip` names. */
function firstFrameOutside(from: (...args: never[]) => unknown, skip: (file: string) => boolean): { file: string; line: number | null } | undefined {
  // structured call sites: no stack string is formatted (that was a fifth of a 1,000-resource plan)
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  Error.prepareStackTrace = (_error, sites) => sites;
  Error.stackTraceLimit = 12;
  const holder: { stack?: NodeJS.CallSite[] } = {};
  Error.captureStackTrace(holder, from);
  const sites = holder.stack ?? [];
  Error.prepareStackTrace = prepare;
  Error.stackTraceLimit = limit;
  for (const site of sites) {
    let file = site.getFileName();
    if (!file) continue;
    if (file.startsWith('file://')) file = decodeURIComponent(new URL(file).pathname);
    if (file.startsWith(ENGINE_DIR) || file.startsWith('node:') || skip(file)) continue;
    return { file, line: site.getLineNumber() };
  }
  return undefined;
}

function relativeToCwd(file: string): string {
  const cwd = process.cwd() + '/';
  return file.startsWith(cwd) ? file.slice(cwd.length) : file;
}
