import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HttpRequest } from '@azure/functions';
import {
  InvalidIdError,
  InvalidJsonError,
  InvalidRequestError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
} from '../../../src/core/errors';
import { parseConversationId, parseIdempotencyKey, parsePage, readJson } from '../../../src/http/request';
import { createConversationSchema, sendMessageSchema } from '../../../src/http/schemas';

const limits = { maxMessageChars: 50, maxExamples: 2 };

function post(
  body: string,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  url = 'http://localhost/api/x',
) {
  return new HttpRequest({ method: 'POST', url, headers, body: { string: body } });
}

async function fieldErrors(promise: Promise<unknown>) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof InvalidRequestError, String(error));
    return (error.extensions.errors as { field: string; message: string }[]).map(
      (entry) => `${entry.field}: ${entry.message}`,
    );
  }
  assert.fail('expected the request to be refused');
}

describe('readJson', () => {
  it('accepts a valid message', async () => {
    assert.deepEqual(await readJson(post('{"content":"hi","name":"ann"}'), sendMessageSchema(limits), 1000), {
      content: 'hi',
      name: 'ann',
    });
  });

  it('refuses invalid JSON, non-objects, a wrong media type and an oversized body', async () => {
    await assert.rejects(readJson(post('{"content":'), sendMessageSchema(limits), 1000), InvalidJsonError);
    await assert.rejects(readJson(post('[1]'), sendMessageSchema(limits), 1000), InvalidJsonError);
    await assert.rejects(readJson(post('"hi"'), sendMessageSchema(limits), 1000), InvalidJsonError);
    await assert.rejects(
      readJson(post('{"content":"hi"}', { 'content-type': 'text/plain' }), sendMessageSchema(limits), 1000),
      UnsupportedMediaTypeError,
    );
    await assert.rejects(
      readJson(post(`{"content":"${'x'.repeat(2000)}"}`), sendMessageSchema(limits), 1000),
      PayloadTooLargeError,
    );
  });

  it('names each bad field: wrong types, empty, too long, unknown and forbidden fields', async () => {
    assert.deepEqual(await fieldErrors(readJson(post('{"content":5}'), sendMessageSchema(limits), 1000)), [
      'content: content must be a string',
    ]);
    assert.deepEqual(await fieldErrors(readJson(post('{"content":"  "}'), sendMessageSchema(limits), 1000)), [
      'content: content must not be blank',
    ]);
    assert.deepEqual(
      await fieldErrors(readJson(post(`{"content":"${'x'.repeat(51)}"}`), sendMessageSchema(limits), 1000)),
      ['content: content is longer than 50 characters'],
    );
    assert.deepEqual(
      await fieldErrors(readJson(post('{"content":"hi","role":"system"}'), sendMessageSchema(limits), 1000)),
      ['(body): unknown field: role'],
    );
    assert.deepEqual(
      await fieldErrors(readJson(post('{"content":"hi","name":"a b"}'), sendMessageSchema(limits), 1000)),
      ['name: name is 1 to 64 letters, digits, _ or -'],
    );
  });

  it('refuses examples with a system role, too many examples and bad metadata', async () => {
    const schema = createConversationSchema(limits);
    assert.deepEqual(
      await fieldErrors(readJson(post('{"examples":[{"role":"system","content":"x"}]}'), schema, 1000)),
      ['examples/0/role: role must be "user" or "assistant"'],
    );
    const three = JSON.stringify({ examples: [1, 2, 3].map(() => ({ role: 'user', content: 'x' })) });
    assert.deepEqual(await fieldErrors(readJson(post(three), schema, 1000)), ['examples: at most 2 examples']);
    const errors = await fieldErrors(readJson(post('{"metadata":{"a":1}}'), schema, 1000));
    assert.deepEqual(errors, ['metadata/a: metadata values must be strings']);
  });
});

describe('path, query and header parsing', () => {
  it('accepts server-made ids and refuses characters Table Storage forbids and over-long ids', () => {
    assert.equal(parseConversationId('0b7c7d2e-4f7a-4b8e-9d55-0c8b7c1f0e11'), '0b7c7d2e-4f7a-4b8e-9d55-0c8b7c1f0e11');
    for (const bad of ['a/b', 'a\\b', 'a#b', 'a?b', 'a\u0001b', 'x'.repeat(1025), '', undefined]) {
      assert.throws(() => parseConversationId(bad), InvalidIdError, String(bad));
    }
  });

  it('validates paging', () => {
    const request = (query: string) => new HttpRequest({ method: 'GET', url: `http://localhost/api/x?${query}` });
    assert.deepEqual(parsePage(request(''), { limit: 10, max: 50 }), { limit: 10 });
    assert.deepEqual(parsePage(request('limit=5&cursor=abc'), { limit: 10, max: 50 }), { limit: 5, cursor: 'abc' });
    for (const bad of ['limit=0', 'limit=51', 'limit=x', 'limit=1.5', 'cursor=%2F']) {
      assert.throws(() => parsePage(request(bad), { limit: 10, max: 50 }), InvalidRequestError, bad);
    }
  });

  it('validates the Idempotency-Key header', () => {
    const request = (key?: string) =>
      new HttpRequest({
        method: 'POST',
        url: 'http://localhost/',
        headers: key === undefined ? {} : { 'idempotency-key': key },
      });
    assert.equal(parseIdempotencyKey(request()), undefined);
    assert.equal(parseIdempotencyKey(request('abc-123')), 'abc-123');
    assert.throws(() => parseIdempotencyKey(request('has space')), InvalidRequestError);
    assert.throws(() => parseIdempotencyKey(request('x'.repeat(256))), InvalidRequestError);
  });
});
