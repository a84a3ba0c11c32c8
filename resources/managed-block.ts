// ManagedBlock: lines meshvm owns between markers inside a file it does not own (/etc/hosts); the rest stays byte for byte.
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import { fileMode, guestPath } from '../engine/validate.ts';
import { lineProblem, RenderError, showValue } from '../engine/values.ts';
import type { Host, HostReader } from '../engine/host.ts';

export const managedBlockSpec = z.strictObject({
  path: guestPath,
  /** Tells several blocks in one file apart; part of the markers. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'expected letters, digits, ".", "_" or "-"')
    .default('meshvm'),
  /** One line each (tabs allowed), none that reads as a block marker. */
  lines: z.array(z.string().superRefine((line, ctx) => refine(ctx, line, lineProblemIn(line, 'tab')))),
  ensure: z.enum(['present', 'absent']).default('present'),
  /** The file's comment leader, used in the markers. */
  comment: z
    .string()
    .min(1)
    .superRefine((comment, ctx) => refine(ctx, comment, lineProblemIn(comment)))
    .default('#'),
  /** Mode of the file if meshvm has to create it. */
  createMode: fileMode.default(0o644),
});
export type ManagedBlockSpec = z.output<typeof managedBlockSpec>;

/** A line that reads as a marker (this block's or another's) would end the block early or start a second one on every run. */
const MARKER_WORDS = /(^|\s)(BEGIN|END) meshvm( |$)/;

/** Why a line (or the comment leader) cannot go into the block, or undefined. */
function lineProblemIn(text: string, allow?: 'tab'): string | undefined {
  const line = lineProblem(text, allow);
  if (line) return `it has ${line}: the block holds whole lines`;
  if (MARKER_WORDS.test(text)) return 'it reads as a block marker ("BEGIN meshvm" / "END meshvm")';
  return undefined;
}

function refine(ctx: z.RefinementCtx, text: string, problem: string | undefined): void {
  if (problem) ctx.addIssue({ code: 'custom', message: `${showValue(text)}: ${problem}` });
}

export interface ManagedBlockState {
  /** The lines between the markers; undefined when there is no block. */
  lines: string[] | undefined;
}

const markers = (spec: ManagedBlockSpec) => ({
  begin: `${spec.comment} BEGIN meshvm ${spec.name}`,
  end: `${spec.comment} END meshvm ${spec.name}`,
});

/** Where the block sits in the file's text, by character offsets of whole lines. */
export function findBlock(text: string, begin: string, end: string): { start: number; stop: number; lines: string[] } | undefined {
  const lines = text.split('\n');
  const first = lines.indexOf(begin);
  if (first < 0) return undefined;
  const last = lines.indexOf(end, first + 1);
  if (last < 0) throw new Error(`found "${begin}" but no "${end}" after it; fix the file by hand`);
  const start = lines.slice(0, first).reduce((n, l) => n + l.length + 1, 0);
  const stop = lines.slice(0, last + 1).reduce((n, l) => n + l.length + 1, 0);
  return { start, stop: Math.min(stop, text.length), lines: lines.slice(first + 1, last) };
}

/** The file with the block replaced, appended or removed. */
export function renderWithBlock(text: string, spec: ManagedBlockSpec): string {
  const ref = `managed_block[${spec.path}#${spec.name}]`;
  for (const [i, line] of spec.lines.entries()) if (lineProblemIn(line, 'tab')) throw new RenderError(ref, `lines[${i}]`, line, lineProblemIn(line, 'tab')!);
  if (lineProblemIn(spec.comment)) throw new RenderError(ref, 'comment', spec.comment, lineProblemIn(spec.comment)!);
  const { begin, end } = markers(spec);
  const found = findBlock(text, begin, end);
  const block = spec.ensure === 'absent' ? '' : [begin, ...spec.lines, end].join('\n') + '\n';
  if (found) {
    const after = text.slice(found.stop);
    const stop = found.stop === text.length && !text.endsWith('\n') ? '' : after;
    return text.slice(0, found.start) + block + stop;
  }
  if (!block) return text;
  return text + (text === '' || text.endsWith('\n') ? '' : '\n') + block;
}

export const managedBlockType = {
  kind: 'managed_block',
  readAhead: true,
  schema: managedBlockSpec,
  key: (spec: ManagedBlockSpec) => `${spec.path}#${spec.name}`,

  async current(host: HostReader, spec: ManagedBlockSpec): Promise<ManagedBlockState> {
    const text = await host.readFile(spec.path);
    const { begin, end } = markers(spec);
    return { lines: text === undefined ? undefined : findBlock(text, begin, end)?.lines };
  },

  changes(spec: ManagedBlockSpec, current: ManagedBlockState | undefined): Changes<ManagedBlockState> {
    const have = current?.lines;
    if (spec.ensure === 'absent') return have ? { lines: { from: have, to: undefined as unknown as string[] } } : {};
    const same = have && have.length === spec.lines.length && have.every((l, i) => l === spec.lines[i]);
    return same ? {} : { lines: { from: have, to: spec.lines } };
  },

  async apply(host: Host, spec: ManagedBlockSpec): Promise<void> {
    const text = await host.readFile(spec.path);
    await host.writeFile(spec.path, renderWithBlock(text ?? '', spec), text === undefined ? { mode: spec.createMode } : {});
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field !== 'lines') return undefined;
    const from = (change.from as string[] | undefined) ?? [];
    const to = (change.to as string[] | undefined) ?? [];
    if (!change.to) return `remove the block (${from.length} lines)`;
    const gone = from.filter((l) => !to.includes(l)).map((l) => `    - ${l}`);
    const added = to.filter((l) => !from.includes(l)).map((l) => `    + ${l}`);
    return [change.from ? 'update the block' : `add a block of ${to.length} lines`, ...gone, ...added].join('\n');
  },
};

export const ManagedBlock = defineResource(managedBlockType);
