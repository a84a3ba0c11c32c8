// Secret values seen during a run (marked by the clients and by resources' sensitive fields), and the redaction every output path applies.

const MASK = '(sensitive)';
const MIN_LENGTH = 4;
/** A value shorter than this is masked only where it stands as a whole word, so a short secret does not blank out common words. */
const WORD_BELOW = 12;
const WORD_CHAR = /[A-Za-z0-9_.-]/;

/** The set of secret strings of one process; reporters, the JSON report and error messages pass through `redact`. */
export class Secrets {
  readonly #values = new Set<string>();

  /** Marks exact values as secret: a string, or every string inside an array or object (a client's credentials). */
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
      if (!out.includes(value)) continue;
      out = value.length >= WORD_BELOW ? out.split(value).join(MASK) : maskWords(out, value);
    }
    return out;
  }
}

/** Masks `value` where neither neighbour continues a word (a short secret inside a longer word is not that secret). */
function maskWords(text: string, value: string): string {
  let out = '';
  let from = 0;
  for (let at = text.indexOf(value); at !== -1; at = text.indexOf(value, at + value.length)) {
    const before = text[at - 1];
    const after = text[at + value.length];
    if ((before !== undefined && WORD_CHAR.test(before)) || (after !== undefined && WORD_CHAR.test(after))) continue;
    out += text.slice(from, at) + MASK;
    from = at + value.length;
  }
  return out + text.slice(from);
}

/** The process-wide registry: a secret read by any client or declared by any resource is masked everywhere. */
export const secrets = new Secrets();

export const SENSITIVE = MASK;
