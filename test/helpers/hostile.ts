// Arbitrary text for the renderers' property tests: plain text mixed with what breaks a format (line breaks, NUL, controls, quotes, comment and marker words, unicode).
import fc from 'fast-check';

/** Pieces that end a line, a value, a quote or a block in one format or another. */
export const BREAKERS = [
  '\n',
  '\r',
  '\r\n',
  '\0',
  '\t',
  '\u0085',
  '\u2028',
  '\u2029',
  '\u001b',
  '\u007f',
  '\u009b',
  '\ud800',
  ' ',
  '  ',
  '#',
  ' #',
  ';',
  '"',
  "'",
  '\\',
  '=',
  '/',
  '$',
  '`',
  '%',
  '%n',
  ':',
  '[',
  ']',
  '{',
  '}',
  '-',
  '*',
  '&',
  '!',
  '|',
  '>',
  '?',
  '~',
  '@',
  ',',
  'BEGIN meshvm ',
  '# END meshvm x',
  'yes',
  'null',
  '0x1F',
  '1_0.5',
  '1e3',
  '---',
  'é',
  '😀',
  '\u200b',
  '\ufeff',
  '\u00a0',
];

/** One piece: a breaker, a printable ASCII character, or any code point. */
const piece = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...BREAKERS) },
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
);

/** Text of up to `maxLength` pieces, hostile and harmless mixed. */
export const hostileText = (maxLength = 10) => fc.string({ unit: piece, maxLength });

/** An IPv4 or IPv6 address, or hostile text where one is expected. */
export const ipOrHostile = fc.oneof(fc.ipV4(), fc.ipV6(), hostileText());

/** A DNS name, or hostile text where one is expected. */
export const nameOrHostile = fc.oneof(fc.domain(), hostileText());

/** Counts the inputs a property accepted and refused, so a test can show it exercised both. */
export class Tally {
  accepted = 0;
  refused = 0;
  /** Runs `render`; a refusal of an expected class counts as refused, anything else thrown fails the property. */
  attempt<T>(render: () => T, ...refusals: (new (...args: never[]) => Error)[]): T | undefined {
    try {
      const out = render();
      this.accepted++;
      return out;
    } catch (error) {
      if (!refusals.some((refusal) => error instanceof refusal)) throw error;
      this.refused++;
      return undefined;
    }
  }
}
