/**
 * Standard Webhooks verification (https://www.standardwebhooks.com): the sender signs
 * `{webhook-id}.{webhook-timestamp}.{raw body}` with HMAC-SHA256 under the base64 key in `whsec_...`, and sends
 * `webhook-signature: v1,<base64> [v1,<base64> ...]`. We verify the raw bytes as received (re-serialised JSON is a
 * different message), accept any configured secret so secrets can be rotated, and refuse timestamps more than
 * five minutes away from now in either direction so a captured delivery cannot be replayed later.
 */
import { InvalidSignatureError } from '../../core/errors';
import { matchesAnyKey } from './hmac';

export const WEBHOOK_TOLERANCE_SECONDS = 5 * 60;
const SECRET_PREFIX = 'whsec_';
/** webhook-id becomes the delivery's idempotency key: printable ASCII, bounded. */
const WEBHOOK_ID = /^[\x21-\x7e]{1,255}$/;
const TIMESTAMP = /^\d{1,12}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_SIGNATURES = 10;

export interface StandardWebhookHeaders {
  id: string | null;
  timestamp: string | null;
  signature: string | null;
}

export interface VerifiedDelivery {
  /** The sender's message id: the same on every redelivery of one message. */
  id: string;
  timestamp: Date;
}

/** The HMAC key of a `whsec_` secret (base64 after the prefix; the prefix is optional, as in the reference library). */
export function decodeWebhookSecret(secret: string): Buffer {
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
  if (key.byteLength === 0) throw new Error('A webhook secret decodes to no bytes.');
  return key;
}

export function verifyStandardWebhook(input: {
  headers: StandardWebhookHeaders;
  body: Uint8Array;
  /** HMAC keys, already decoded (see decodeWebhookSecret). */
  keys: readonly Uint8Array[];
  now: Date;
  toleranceSeconds?: number;
}): VerifiedDelivery {
  const { id, timestamp, signature } = input.headers;
  if (!id || !timestamp || !signature) {
    throw new InvalidSignatureError(
      'Signed deliveries need the webhook-id, webhook-timestamp and webhook-signature headers.',
    );
  }
  if (!WEBHOOK_ID.test(id)) throw new InvalidSignatureError('webhook-id must be 1 to 255 visible ASCII characters.');
  if (!TIMESTAMP.test(timestamp))
    throw new InvalidSignatureError('webhook-timestamp must be whole seconds since the Unix epoch.');

  const sentAt = Number(timestamp);
  const tolerance = input.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS;
  const skew = Math.floor(input.now.getTime() / 1000) - sentAt;
  if (skew > tolerance)
    throw new InvalidSignatureError(
      `webhook-timestamp is more than ${tolerance} s old: the delivery is refused as a possible replay.`,
    );
  if (-skew > tolerance)
    throw new InvalidSignatureError(
      `webhook-timestamp is more than ${tolerance} s in the future: check the sender's clock.`,
    );

  const received = parseSignatures(signature);
  const signedPrefix = Buffer.from(`${id}.${timestamp}.`, 'utf8');
  if (received.length === 0 || !matchesAnyKey(input.keys, received, signedPrefix, input.body)) {
    throw new InvalidSignatureError(
      'webhook-signature does not match the delivery: no v1 signature was made with a configured secret over these bytes.',
    );
  }
  return { id, timestamp: new Date(sentAt * 1000) };
}

/** The v1 signatures' bytes; other versions (e.g. v1a, asymmetric) and malformed entries are skipped. */
function parseSignatures(header: string): Buffer[] {
  const signatures: Buffer[] = [];
  for (const entry of header.split(' ').slice(0, MAX_SIGNATURES)) {
    const comma = entry.indexOf(',');
    if (comma < 0 || entry.slice(0, comma) !== 'v1') continue;
    const encoded = entry.slice(comma + 1);
    // Buffer's base64 decoder skips characters it does not know: insist on canonical base64 first.
    if (encoded.length === 0 || !BASE64.test(encoded)) continue;
    signatures.push(Buffer.from(encoded, 'base64'));
  }
  return signatures;
}
