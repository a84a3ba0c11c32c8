// SystemdUnit: a unit file or drop-in under /etc/systemd/system, rendered from sections, verified, daemon-reloaded.
import { z } from 'zod';
import { defineResource, type Action, type Changes, type Declaration } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { lineProblem, RenderError, showValue } from '../engine/values.ts';
import { File } from './file.ts';
import { Directory } from './directory.ts';
import { systemdLive, unitName } from './systemd.ts';

/**
 * Why a string cannot be a directive's value in a unit file, or undefined: systemd reads one line (a newline would start a
 * directive of its own), strips the whitespace around it, and joins the next line to one that ends in a backslash.
 */
export function unitValueProblem(text: string): string | undefined {
  const line = lineProblem(text, 'tab');
  if (line) return `it has ${line}: a directive is one line`;
  if (/^[ \t]|[ \t]$/.test(text)) return 'it begins or ends with white space, which systemd strips';
  if (text.endsWith('\\')) return 'it ends with "\\", which joins the next line to it';
  return undefined;
}

const value = z.union([
  z.string().superRefine((text, ctx) => {
    const problem = unitValueProblem(text);
    if (problem) ctx.addIssue({ code: 'custom', message: `${showValue(text)}: ${problem}` });
  }),
  z.number(),
  z.boolean(),
]);
const sectionsSchema = z.record(
  z.string().regex(/^[A-Z][A-Za-z-]*$/, 'a section name such as Unit, Service, Timer, Install'),
  z.record(z.string().regex(/^[A-Z][A-Za-z0-9]*$/, 'a directive such as ExecStart or OnUnitActiveSec'), z.union([value, z.array(value)])),
);

export const systemdUnitSpec = z
  .strictObject({
    name: unitName,
    /** A drop-in name: writes /etc/systemd/system/<name>.d/<dropIn>.conf instead of the unit file. */
    dropIn: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." or "-"')
      .optional(),
    /** Sections in order, directives in order; a list repeats the directive. */
    sections: sectionsSchema.optional(),
    /** Or the text itself. */
    content: z.string().optional(),
    /** Check with systemd-analyze verify (units only, on a live systemd host, where the tool exists). */
    verify: z.boolean().default(true),
    /** absent: the file removed (stop and disable the unit first, with Service), then systemd reloaded. */
    ensure: z.enum(['present', 'absent']).default('present'),
  })
  .refine((s) => (s.sections === undefined) !== (s.content === undefined), 'give exactly one of sections and content');
export type SystemdUnitSpec = z.output<typeof systemdUnitSpec>;

/** Deterministic unit-file text: sections and directives in the order given, lists as repeated directives. */
export function renderUnit(sections: z.output<typeof sectionsSchema>, unit = 'a unit file'): string {
  const blocks = Object.entries(sections).map(([section, directives]) => {
    const lines = Object.entries(directives).flatMap(([key, v]) =>
      (Array.isArray(v) ? v : [v]).map((item) => {
        const problem = typeof item === 'string' ? unitValueProblem(item) : undefined;
        if (problem) throw new RenderError(unit, `${section}.${key}`, item, problem);
        return `${key}=${item === true ? 'yes' : item === false ? 'no' : item}`;
      }),
    );
    return [`[${section}]`, ...lines].join('\n');
  });
  return `# Managed by meshvm: changes made here are overwritten.\n${blocks.join('\n\n')}\n`;
}

export function unitPath(spec: Pick<SystemdUnitSpec, 'name' | 'dropIn'>): string {
  return spec.dropIn ? `/etc/systemd/system/${spec.name}.d/${spec.dropIn}.conf` : `/etc/systemd/system/${spec.name}`;
}

// systemd-analyze names the unit after the file, so the staged file is checked under its real name in a private temp dir;
// where the tool is missing the check passes (asked only when the file is written, never on a no-op converge)
const VERIFY = [
  'sh',
  '-c',
  'command -v systemd-analyze >/dev/null || exit 0; d=$(mktemp -d) && cp "$1" "$d/$2" && systemd-analyze verify --man=no "$d/$2"; r=$?; rm -rf "$d"; exit $r',
  'sh',
  '%{path}',
];

/** What the unit's parts depend on: a running systemd (to reload, and to check a unit file against). */
export interface SystemdUnitFacts {
  live: boolean;
}

export const systemdUnitType = {
  kind: 'systemd_unit',
  schema: systemdUnitSpec,
  key: (spec: SystemdUnitSpec) => unitPath(spec),

  async current(host: HostReader): Promise<SystemdUnitFacts> {
    return { live: await systemdLive(host) };
  },

  /** The unit's own state is its file's: a composite has nothing else to compare. */
  changes: (): Changes<SystemdUnitFacts> => ({}),

  /** The drop-in directory, the unit file (verified where systemd runs), then daemon-reload when it changed. */
  children(spec: SystemdUnitSpec, facts: SystemdUnitFacts | undefined): (Declaration | Action)[] {
    const path = unitPath(spec);
    const reload: Action = {
      action: 'daemon-reload (`systemctl daemon-reload`)',
      ...(!facts?.live && { skip: 'systemd is not running this root; it reads the unit when it starts' }),
      run: async (host: Host) => void (await host.run(['systemctl', 'daemon-reload'])),
    };
    if (spec.ensure === 'absent') return [File({ path, ensure: 'absent' }), reload];
    return [
      Directory({ path: path.slice(0, path.lastIndexOf('/')) }),
      File({
        path,
        content: spec.content ?? renderUnit(spec.sections!, `systemd_unit[${path}]`),
        mode: 0o644,
        owner: 'root',
        group: 'root',
        ...(spec.verify && !spec.dropIn && facts?.live && { verify: [...VERIFY, spec.name], verifyOnHost: true }),
      }),
      reload,
    ];
  },
};

export const SystemdUnit = defineResource(systemdUnitType);
