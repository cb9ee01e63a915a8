import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { InvalidSignatureError } from '../../../../src/core/errors';
import { verifyGithubSignature } from '../../../../src/http/webhooks/githubSignature';
import { constantTimeEqual } from '../../../../src/http/webhooks/hmac';
import { decodeWebhookSecret, verifyStandardWebhook } from '../../../../src/http/webhooks/standardWebhooks';

// Secrets in the spec's format: whsec_ + base64 of random bytes (these are test values, not real secrets).
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const ROTATED = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
const NOW = new Date('2026-03-01T12:00:00Z');
const PAYLOAD = '{"threadId":"t-1","content":"Hello"}';

/** Headers made by the standardwebhooks package, an independent implementation of the spec. */
function signed(secret = SECRET, options: { id?: string; at?: Date; payload?: string } = {}) {
  const id = options.id ?? 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W';
  const at = options.at ?? NOW;
  return {
    id,
    timestamp: String(Math.floor(at.getTime() / 1000)),
    signature: new Webhook(secret).sign(id, at, options.payload ?? PAYLOAD),
  };
}

function verify(
  headers: { id: string | null; timestamp: string | null; signature: string | null },
  body = PAYLOAD,
  secrets = [SECRET],
) {
  return verifyStandardWebhook({ headers, body: Buffer.from(body), keys: secrets.map(decodeWebhookSecret), now: NOW });
}

function refusedWith(run: () => unknown, pattern: RegExp) {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof InvalidSignatureError, String(error));
    assert.equal(error.status, 401);
    assert.match(error.detail, pattern);
    return true;
  });
}

describe('Standard Webhooks verification', () => {
  it('accepts a delivery signed by the reference library and returns its id', () => {
    const headers = signed();
    assert.deepEqual(verify(headers), { id: headers.id, timestamp: NOW });
  });

  it('refuses a tampered body, and the same JSON serialised differently', () => {
    refusedWith(() => verify(signed(), PAYLOAD.replace('Hello', 'Hellp')), /does not match/);
    const reserialised = JSON.stringify(JSON.parse(PAYLOAD), null, 2);
    assert.deepEqual(JSON.parse(reserialised), JSON.parse(PAYLOAD));
    refusedWith(() => verify(signed(), reserialised), /does not match/);
  });

  it('refuses a signature made with another secret, or over another id', () => {
    refusedWith(() => verify(signed(ROTATED)), /does not match/);
    refusedWith(() => verify({ ...signed(), id: 'msg_other' }), /does not match/);
  });

  it('accepts any configured secret, so secrets can be rotated', () => {
    assert.equal(verify(signed(ROTATED), PAYLOAD, [SECRET, ROTATED]).id, signed().id);
    assert.equal(verify(signed(SECRET), PAYLOAD, [SECRET, ROTATED]).id, signed().id);
  });

  it('accepts a header listing several signatures when one matches', () => {
    const good = signed();
    const headers = { ...good, signature: `v1a,abc ${signed(ROTATED).signature} ${good.signature}` };
    assert.equal(verify(headers).id, good.id);
  });

  it('refuses timestamps more than five minutes away, either way', () => {
    refusedWith(() => verify(signed(SECRET, { at: new Date(NOW.getTime() - 301_000) })), /old/);
    refusedWith(() => verify(signed(SECRET, { at: new Date(NOW.getTime() + 301_000) })), /future/);
    assert.ok(verify(signed(SECRET, { at: new Date(NOW.getTime() - 299_000) })));
  });

  it('treats a wrong-length or malformed signature as a mismatch, never an exception of its own', () => {
    const good = signed();
    const digest = good.signature.slice(3);
    for (const signature of [
      `v1,${Buffer.from('short').toString('base64')}`,
      `v1,${Buffer.concat([Buffer.from(digest, 'base64'), Buffer.from([0])]).toString('base64')}`,
      `v1,${digest}!!`,
      `v1,`,
      `v2,${digest}`,
      digest,
      '',
    ]) {
      refusedWith(() => verify({ ...good, signature }), /does not match|headers/);
    }
  });

  it('refuses missing and malformed headers', () => {
    const good = signed();
    refusedWith(() => verify({ ...good, id: null }), /headers/);
    refusedWith(() => verify({ ...good, timestamp: null }), /headers/);
    refusedWith(() => verify({ ...good, signature: null }), /headers/);
    refusedWith(() => verify({ ...good, timestamp: '1.5e9' }), /whole seconds/);
    refusedWith(() => verify({ ...good, id: 'has space' }), /webhook-id/);
  });
});

describe('GitHub X-Hub-Signature-256', () => {
  const secret = "It's a Secret to Everybody";
  const body = Buffer.from('Hello, World!');
  const documented = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';

  it("accepts GitHub's documented test vector", () => {
    assert.equal(createHmac('sha256', secret).update(body).digest('hex'), documented.slice(7));
    verifyGithubSignature({ header: documented, body, secrets: [secret] });
  });

  it('refuses a changed body, another secret, a wrong length and a missing header', () => {
    refusedWith(
      () => verifyGithubSignature({ header: documented, body: Buffer.from('Hello, World?'), secrets: [secret] }),
      /does not match/,
    );
    refusedWith(() => verifyGithubSignature({ header: documented, body, secrets: ['other'] }), /does not match/);
    refusedWith(() => verifyGithubSignature({ header: documented.slice(0, -2), body, secrets: [secret] }), /64 hex/);
    refusedWith(
      () => verifyGithubSignature({ header: documented.replace('sha256', 'sha1'), body, secrets: [secret] }),
      /64 hex/,
    );
    refusedWith(() => verifyGithubSignature({ header: null, body, secrets: [secret] }), /must carry/);
  });
});

describe('constantTimeEqual', () => {
  it('compares bytes and answers false for different lengths instead of throwing', () => {
    assert.equal(constantTimeEqual(Buffer.from('abc'), Buffer.from('abc')), true);
    assert.equal(constantTimeEqual(Buffer.from('abc'), Buffer.from('abd')), false);
    assert.equal(constantTimeEqual(Buffer.from('abc'), Buffer.from('abcd')), false);
    assert.equal(constantTimeEqual(Buffer.alloc(0), Buffer.from('a')), false);
  });
});
