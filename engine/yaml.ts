// YAML with line numbers for errors, 0644 read as octal (as every ops person writes a mode), a bare 644 mode refused, alias bombs refused.
import { isScalar, LineCounter, parseDocument, visit, type Document, type ScalarTag } from 'yaml';
import { InputError } from './errors.ts';

/** YAML 1.2 reads 0644 as the decimal 644, a silent wrong mode; like YAML 1.1 (and Ansible) meshvm reads it as octal. */
const leadingZeroOctal: ScalarTag = {
  identify: (value) => typeof value === 'number',
  default: true,
  tag: 'tag:yaml.org,2002:int',
  format: 'OCT',
  test: /^0[0-7]+$/,
  resolve: (text) => parseInt(text, 8),
};

/** Alias expansions allowed in one document (yaml's maxAliasCount): a "billion laughs" file is refused, not expanded. */
const MAX_ALIASES = 100;

/** Keys whose value is a file mode: `mode`, `createMode`, ... */
const MODE_KEY = /^(mode|[a-z][A-Za-z]*Mode)$/;

export interface ParsedYaml {
  value: unknown;
  /** "file:line" of the node at a path, or of its nearest parent that exists. */
  where(path: readonly PropertyKey[]): string;
}

export function parseYaml(text: string, file: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter, customTags: (tags) => [leadingZeroOctal, ...tags], prettyErrors: true });
  const error = doc.errors[0];
  if (error) {
    const line = error.linePos?.[0]?.line;
    // the parser's first line ends "at line L, column C:" (its excerpt follows): the line is in the location already
    const column = error.linePos?.[0]?.col;
    const message = error.message
      .split('\n')[0]!
      .replace(/\s*at line \d+, column \d+:?\s*$/, '')
      .replace(/[:\s]+$/, '');
    throw new InputError(line ? `${file}:${line}` : file, `malformed YAML: ${message}${column ? ` (column ${column})` : ''}`);
  }
  refuseDecimalModes(doc, file, lineCounter);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (error) {
    if (!(error instanceof ReferenceError)) throw error;
    throw new InputError(file, `refused: its aliases (*name) expand more than ${MAX_ALIASES} times (${error.message})`);
  }
  return {
    value,
    where(path) {
      for (let n = path.length; n >= 0; n--) {
        const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
        if (node?.range) return `${file}:${lineCounter.linePos(node.range[0]).line}`;
      }
      return file;
    },
  };
}

/**
 * `mode: 644` is the decimal 644 (01204: the sticky bit, and not rw-r--r--) in YAML 1.2: refused, naming the line, with
 * what to write. A leading zero (0644, read as octal here) or 0o644 is how a mode is written by hand; a JSON document
 * (quoted keys) can only write a mode in decimal, and is taken at its word.
 */
function refuseDecimalModes(doc: Document, file: string, lineCounter: LineCounter): void {
  visit(doc, {
    Pair(_, pair) {
      // a quoted key is JSON's way ("mode": 420, from a generator such as Terraform's jsonencode): JSON has no octal
      if (!isScalar(pair.key) || pair.key.type !== 'PLAIN' || !isScalar(pair.value)) return;
      const message = decimalModeProblem(String(pair.key.value), pair.value.source ?? '');
      if (message) throw new InputError(`${file}:${lineCounter.linePos(pair.value.range?.[0] ?? 0).line}`, message);
    },
  });
}

/** Why the value of `key`, written as `text`, is refused (a mode written as a bare decimal number), or undefined. */
export function decimalModeProblem(key: string, text: string): string | undefined {
  if (!MODE_KEY.test(key) || !/^[1-9][0-9]*$/.test(text)) return undefined;
  return /^[0-7]+$/.test(text)
    ? `${key}: ${text} would be read as the decimal number ${text} (0${Number(text).toString(8)}); a mode is octal: write 0${text}`
    : `${key}: ${text} is a decimal number; a mode is octal: write 0${Number(text).toString(8)} if that is the mode meant`;
}

/** A --set value: YAML for numbers, booleans and lists, or the raw text. */
export function parseScalar(text: string): unknown {
  try {
    const doc = parseDocument(text, { customTags: (tags) => [leadingZeroOctal, ...tags] });
    return doc.errors.length ? text : (doc.toJS() ?? text);
  } catch {
    return text;
  }
}
