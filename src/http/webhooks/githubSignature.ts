/**
 * GitHub webhook verification: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`, the secret used
 * as UTF-8 text. Same HMAC and constant-time comparison as Standard Webhooks; GitHub signs no timestamp, so replays
 * are handled by deduplicating on X-GitHub-Delivery (redeliveries keep it).
 */
import { InvalidSignatureError } from '../../core/errors';
import { matchesAnyKey } from './hmac';

const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

export function verifyGithubSignature(input: {
  header: string | null;
  body: Uint8Array;
  secrets: readonly string[];
}): void {
  if (!input.header) throw new InvalidSignatureError('GitHub deliveries must carry X-Hub-Signature-256.');
  const match = SIGNATURE.exec(input.header.trim());
  if (!match?.[1]) throw new InvalidSignatureError('X-Hub-Signature-256 must be sha256= followed by 64 hex digits.');
  if (!matchesAnyKey(input.secrets, [Buffer.from(match[1], 'hex')], input.body)) {
    throw new InvalidSignatureError('X-Hub-Signature-256 does not match the delivery: check the webhook secret.');
  }
}
