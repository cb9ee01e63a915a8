/**
 * Text that may be stored, hashed or turned into a key must be well-formed Unicode: UTF-8 (what hashes and the wire
 * use) turns every unpaired surrogate into U+FFFD, so `a\uD800`, `a\uDFFF` and `a\uFFFD` would hash alike, and the
 * Table service refuses unpaired surrogates outright. NUL is refused beside them: it has no place in chat text and
 * storage formats treat it specially. Requests carrying either are refused; model output has them replaced.
 */

/** An unpaired surrogate: a high one not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'g');

/** True when `text` has no unpaired surrogate (what ES2024's String.prototype.isWellFormed checks). */
export function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** Well-formed and free of NUL: text the app accepts into storage, keys and hashes. */
export function isStorableText(text: string): boolean {
  return isWellFormed(text) && !text.includes('\u0000');
}

/** What a request field must be, in words for a 400. */
export const STORABLE_TEXT_RULE = 'must be valid Unicode text: no unpaired surrogate (\\uD800-\\uDFFF) and no NUL';

/** `text` with every unpaired surrogate and NUL replaced by U+FFFD: for text the app did not choose (model output). */
export function toStorableText(text: string): string {
  return text.replace(LONE_SURROGATES, '\uFFFD').replaceAll('\u0000', '\uFFFD');
}

/** At most `maxUnits` UTF-16 code units of `text`, never ending between the two halves of a surrogate pair. */
export function truncateText(text: string, maxUnits: number): string {
  if (text.length <= maxUnits) return text;
  const last = text.charCodeAt(maxUnits - 1);
  const next = text.charCodeAt(maxUnits);
  const splitsPair = last >= 0xd800 && last <= 0xdbff && next >= 0xdc00 && next <= 0xdfff;
  return text.slice(0, splitsPair ? maxUnits - 1 : maxUnits);
}
