/**
 * Checks over JSON a client sent whose shape no schema fixes (a client tool's `parameters`, a tool result's `output`).
 * Both walk without recursion: JSON.parse accepts nesting hundreds of thousands deep, which would exhaust the stack
 * of anything recursive (JSON.stringify throws a RangeError at a few thousand levels).
 */
import { isStorableText } from '../core/text';

/** Levels of objects and arrays a client's free-form JSON may nest: `{}` is 1, `{"a":[{}]}` is 3. */
export const MAX_JSON_DEPTH = 32;

/** True when `value` nests objects and arrays more than `maxDepth` levels deep. Stops at the first such level. */
export function nestsDeeperThan(value: unknown, maxDepth: number): boolean {
  const pending: [unknown, number][] = [[value, 1]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [node, depth] = next;
    if (node === null || typeof node !== 'object') continue;
    if (depth > maxDepth) return true;
    for (const inner of Object.values(node)) pending.push([inner, depth + 1]);
  }
  return false;
}

/**
 * The path (`a/0/b`, `''` for the value itself) of the first string, or object key, in `value` that storage and hashing
 * would refuse (see core/text.ts), or undefined when there is none.
 */
export function unstorableStringAt(value: unknown): string | undefined {
  const pending: [unknown, string][] = [[value, '']];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [node, path] = next;
    if (typeof node === 'string') {
      if (!isStorableText(node)) return path;
      continue;
    }
    if (node === null || typeof node !== 'object') continue;
    for (const [key, inner] of Object.entries(node)) {
      const at = path === '' ? key : `${path}/${key}`;
      if (!isStorableText(key)) return at;
      pending.push([inner, at]);
    }
  }
  return undefined;
}
