// What a person sees: live progress and colour on a TTY, plain lines that read well in journald otherwise.
import type { Listener, RunEvent, RunReport } from './report.ts';
import { secrets } from './secrets.ts';

export interface HumanOptions {
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  color: boolean;
  /** Also list unchanged resources. */
  verbose: boolean;
}

const guarded = new WeakSet<object>();

/**
 * A closed stdout or stderr (EPIPE: `meshvm converge | head -1`, an ssh session that dropped, a journald restart) must
 * not stop a run: without a listener the stream's 'error' event throws. Later writes to it are dropped; the run goes on.
 */
export function keepGoingWhenClosed(stream: NodeJS.WritableStream): void {
  if (guarded.has(stream) || typeof stream.on !== 'function') return;
  guarded.add(stream);
  stream.on('error', () => {});
}

const paint = (on: boolean, code: number) => (text: string) => (on ? `\x1b[${code}m${text}\x1b[0m` : text);

export function humanListener(options: HumanOptions): Listener {
  const { stream, verbose } = options;
  const tty = Boolean(stream.isTTY);
  const green = paint(options.color, 32);
  const yellow = paint(options.color, 33);
  const red = paint(options.color, 31);
  const dim = paint(options.color, 2);
  let progressShown = false;

  const write = (text: string) => {
    if (progressShown) {
      stream.write('\r\x1b[2K');
      progressShown = false;
    }
    stream.write(secrets.redact(text) + '\n');
  };

  return (event: RunEvent) => {
    switch (event.type) {
      case 'start':
        write(
          `meshvm ${event.offboard ? (event.mode === 'plan' ? 'plan --offboard' : 'offboard') : event.mode} ${event.runlist}: ${event.total} resources${event.root === '/' ? '' : ` (root ${event.root})`}`,
        );
        break;
      case 'checking':
        if (tty) {
          const line = `[${event.index + 1}/${event.total}] ${event.ref}`;
          stream.write(`\r\x1b[2K${dim(line.slice(0, (stream.columns || 80) - 1))}`);
          progressShown = true;
        }
        break;
      case 'resource': {
        const { report } = event;
        if (report.status === 'unchanged' && !verbose) break;
        const status =
          report.status === 'changed'
            ? green('changed')
            : report.status === 'would-change'
              ? yellow('would change')
              : report.status === 'failed'
                ? red('FAILED')
                : dim(report.status);
        write(`${report.ref} ${status}`);
        for (const line of report.changes)
          write(
            line
              .split('\n')
              .map((l) => `    ${l}`)
              .join('\n'),
          );
        if (report.error)
          write(
            red(
              report.error
                .split('\n')
                .map((l) => `    ${l}`)
                .join('\n'),
            ),
          );
        break;
      }
      case 'refresh': {
        const { report } = event;
        const because = report.because.length ? ` (because ${report.because.join(', ')} changed)` : '';
        const words: Record<string, string> = {
          refreshed: green('refreshed'),
          'would-refresh': yellow('would refresh'),
          'not-needed': dim('refresh not needed: this run already did it'),
          failed: red('refresh FAILED'),
          kept: yellow('refresh still owed'),
          skipped: yellow('refresh still owed'),
        };
        write(`${report.ref} ${words[report.status]}${because}`);
        if (report.why) write(`    ${report.why}`);
        if (report.error) write(`    ${report.error}`);
        break;
      }
      case 'message':
        write(event.level === 'warn' ? yellow(`warning: ${event.text}`) : event.text);
        break;
      case 'done':
        write(summaryLine(event.report, { green, yellow, red }));
        break;
    }
  };
}

function summaryLine(report: RunReport, c: { green: (s: string) => string; yellow: (s: string) => string; red: (s: string) => string }): string {
  const s = report.summary;
  const counts = `${s.total} resources, ${s.changed} ${report.mode === 'plan' ? 'to change' : 'changed'}, ${s.failed} failed${s.skipped ? `, ${s.skipped} skipped` : ''} in ${s.seconds.toFixed(2)} s`;
  switch (report.outcome) {
    case 'failed':
      return c.red(`failed: ${counts}`);
    case 'interrupted':
      return c.yellow(`interrupted: ${counts}`);
    case 'would-change':
      return c.yellow(`plan: ${counts}`);
    case 'changed':
      return c.green(`${report.offboard ? 'offboarded' : 'converged'}: ${counts}`);
    default:
      return `${report.mode === 'plan' ? 'plan: nothing to do' : report.offboard ? 'offboarded, nothing to do' : 'converged, nothing to do'}: ${counts}`;
  }
}
