// YAML with line numbers for errors, and 0644 read as octal (as every ops person writes a mode).
import { LineCounter, parseDocument, type Document, type ScalarTag } from 'yaml';
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
  return {
    value: doc.toJS(),
    where(path) {
      for (let n = path.length; n >= 0; n--) {
        const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
        if (node?.range) return `${file}:${lineCounter.linePos(node.range[0]).line}`;
      }
      return file;
    },
  };
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
