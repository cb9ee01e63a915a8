/**
 * The two things both webhook schemes need: an HMAC-SHA256 over raw bytes, and a constant-time comparison that
 * treats a wrong-length value as a mismatch instead of throwing (crypto.timingSafeEqual throws on unequal lengths).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export function hmacSha256(key: Uint8Array | string, ...parts: Uint8Array[]): Buffer {
  const hmac = createHmac('sha256', key);
  for (const part of parts) hmac.update(part);
  return hmac.digest();
}

/** True only when both are the same bytes; never throws. */
export function constantTimeEqual(expected: Uint8Array, received: Uint8Array): boolean {
  // Only the length leaks here, and every valid signature has the same, public length.
  if (expected.byteLength !== received.byteLength) return false;
  return timingSafeEqual(expected, received);
}

/** True when `received` matches the HMAC of `parts` under any of `keys` (secret rotation). Checks every key. */
export function matchesAnyKey(
  keys: readonly (Uint8Array | string)[],
  received: readonly Uint8Array[],
  ...parts: Uint8Array[]
): boolean {
  let matched = false;
  for (const key of keys) {
    const expected = hmacSha256(key, ...parts);
    for (const candidate of received) {
      // No early return: the time taken does not tell which key or entry matched.
      if (constantTimeEqual(expected, candidate)) matched = true;
    }
  }
  return matched;
}
