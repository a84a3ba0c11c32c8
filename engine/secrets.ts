// Secret values seen during a run, and the redaction every output path applies before anything is shown or stored.

const MASK = '(sensitive)';
const MIN_LENGTH = 4;

/** The set of secret strings of one process; reporters, the JSON report and error messages pass through `redact`. */
export class Secrets {
  readonly #values = new Set<string>();

  add(value: unknown): void {
    if (typeof value === 'string') {
      if (value.length >= MIN_LENGTH) this.#values.add(value);
      // multi-line secrets (PEM keys) may surface a line at a time, as in a unified diff
      for (const line of value.split('\n')) if (line.trim().length >= 16) this.#values.add(line.trim());
    } else if (Array.isArray(value)) {
      for (const item of value) this.add(item);
    } else if (value && typeof value === 'object') {
      for (const item of Object.values(value)) this.add(item);
    }
  }

  get size(): number {
    return this.#values.size;
  }

  redact(text: string): string {
    if (this.#values.size === 0) return text;
    let out = text;
    // longest first, so a whole secret is masked before any of its lines
    for (const value of [...this.#values].sort((a, b) => b.length - a.length)) {
      if (out.includes(value)) out = out.split(value).join(MASK);
    }
    return out;
  }
}

/** The process-wide registry: a secret read by any client or declared by any resource is masked everywhere. */
export const secrets = new Secrets();

export const SENSITIVE = MASK;
