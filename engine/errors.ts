// The three kinds of error meshvm reports: bad input, a failed resource, a failed command.

/** Bad input: a file and YAML path (`runlists/x.yaml:7: recipes[0].attributes.port`), a flag, or a resource ref. */
export class InputError extends Error {
  readonly where: string;
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'InputError';
    this.where = where;
  }
}

/** A command that exited non-zero: the argv, the exit code and the last lines of stderr. */
export class CommandError extends Error {
  readonly argv: readonly string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;
  constructor(argv: readonly string[], exitCode: number | undefined, stderr: string, stdout = '') {
    const tail = lastLines(stderr.trim() || stdout.trim(), 8);
    const how = exitCode === undefined ? 'could not be run' : `exited ${exitCode}`;
    super(`\`${argv.join(' ')}\` ${how}${tail ? `:\n${indent(tail)}` : ''}`);
    this.name = 'CommandError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** A resource that failed while reading, applying or refreshing. */
export class ResourceError extends Error {
  readonly ref: string;
  readonly phase: 'validate' | 'read' | 'apply' | 'refresh';
  readonly declaredAt: string | undefined;
  constructor(ref: string, phase: ResourceError['phase'], cause: unknown, declaredAt?: string) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(`${ref}: ${phase} failed: ${reason}${declaredAt ? `\n  (declared at ${declaredAt})` : ''}`, { cause });
    this.name = 'ResourceError';
    this.ref = ref;
    this.phase = phase;
    this.declaredAt = declaredAt;
  }
}

/** Raised by the lock when another run holds it past the wait bound. */
export class LockBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockBusyError';
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function lastLines(text: string, count: number): string {
  return text.split('\n').slice(-count).join('\n');
}

export function indent(text: string, prefix = '  '): string {
  return text
    .split('\n')
    .map((line) => prefix + line)
    .join('\n');
}
