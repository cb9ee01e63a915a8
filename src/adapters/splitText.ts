/**
 * Long strings in Table Storage: a string property holds at most 32,768 UTF-16 code units (64 KiB), so a longer
 * value is stored across `name`, `name_1`, `name_2`, ... and joined back on read. Chunks never end between the
 * two halves of a surrogate pair, so each part is valid UTF-16 on its own (the service would reject a lone one).
 */

export const MAX_STRING_PROPERTY_CHARS = 32_768;

/** Splits `text` into chunks of at most `maxChars` code units; an empty text is one empty chunk. */
export function splitText(text: string, maxChars = MAX_STRING_PROPERTY_CHARS): string[] {
  if (maxChars < 2) throw new RangeError('maxChars must be at least 2 to keep surrogate pairs whole.');
  const chunks: string[] = [];
  let start = 0;
  do {
    let end = Math.min(start + maxChars, text.length);
    if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1)) && isLowSurrogate(text.charCodeAt(end)))
      end -= 1;
    chunks.push(text.slice(start, end));
    start = end;
  } while (start < text.length);
  return chunks;
}

/** The property holding part `index` of `name`: the first part keeps the plain name. */
export function partName(name: string, index: number): string {
  return index === 0 ? name : `${name}_${index}`;
}

/** Sets `name`, `name_1`, ... on `target` to the parts of `text`. */
export function writeLongText(target: Record<string, unknown>, name: string, text: string): void {
  splitText(text).forEach((chunk, index) => {
    target[partName(name, index)] = chunk;
  });
}

/** Joins `name`, `name_1`, ... back; undefined when `name` is absent. Stops at the first missing part. */
export function readLongText(entity: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const first = entity[name];
  if (typeof first !== 'string') return undefined;
  const parts = [first];
  for (let index = 1; ; index++) {
    const part = entity[partName(name, index)];
    if (typeof part !== 'string') break;
    parts.push(part);
  }
  return parts.join('');
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
