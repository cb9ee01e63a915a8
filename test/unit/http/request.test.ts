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
      ['content: content is longer than 50 UTF-16 code units'],
    );
    assert.deepEqual(
      await fieldErrors(readJson(post('{"content":"hi","role":"system"}'), sendMessageSchema(limits), 1000)),
      ['(body): unknown field: role'],
    );
    assert.deepEqual(
      await fieldErrors(readJson(post('{"content":"hi","name":"a b"}'), sendMessageSchema(limits), 1000)),
      ['name: name is 1 to 64 ASCII letters, digits, _ or -'],
    );
  });

  it('says a missing field is required, and an empty one gets one message', async () => {
    assert.deepEqual(await fieldErrors(readJson(post('{}'), sendMessageSchema(limits), 1000)), [
      'content: content is required',
    ]);
    assert.deepEqual(await fieldErrors(readJson(post('{"content":""}'), sendMessageSchema(limits), 1000)), [
      'content: content must not be empty',
    ]);
    assert.deepEqual(await fieldErrors(readJson(post('{"content":null}'), sendMessageSchema(limits), 1000)), [
      'content: content must be a string',
    ]);
  });

  it('counts limits in UTF-16 code units, as documented and stored: an emoji is two', async () => {
    const emoji = '\u{1F600}';
    const at = (units: number) => JSON.stringify({ content: emoji.repeat(units / 2) });
    assert.deepEqual(await readJson(post(at(50)), sendMessageSchema(limits), 1000), { content: emoji.repeat(25) });
    assert.deepEqual(await fieldErrors(readJson(post(at(52)), sendMessageSchema(limits), 1000)), [
      'content: content is longer than 50 UTF-16 code units',
    ]);
    const schema = createConversationSchema(limits);
    const title = JSON.stringify({ title: emoji.repeat(101) });
    assert.deepEqual(await fieldErrors(readJson(post(title), schema, 2000)), [
      'title: title is longer than 200 UTF-16 code units',
    ]);
    const value = JSON.stringify({ metadata: { k: emoji.repeat(257) } });
    assert.deepEqual(await fieldErrors(readJson(post(value), schema, 2000)), [
      'metadata/k: a metadata value is longer than 512 UTF-16 code units',
    ]);
    assert.deepEqual(await readJson(post(JSON.stringify({ title: emoji.repeat(100) })), schema, 2000), {
      title: emoji.repeat(100),
    });
  });

  it('treats an empty body as no fields where every field is optional, and only there', async () => {
    const schema = createConversationSchema(limits);
    assert.deepEqual(await readJson(post('', {}), schema, 1000, { emptyAs: {} }), {});
    await assert.rejects(readJson(post('', {}), sendMessageSchema(limits), 1000), UnsupportedMediaTypeError);
    // A body of spaces is a body: it needs a JSON content type like any other.
    await assert.rejects(readJson(post(' ', {}), schema, 1000, { emptyAs: {} }), UnsupportedMediaTypeError);
  });

  it('says which metadata keys and names are allowed (ASCII)', async () => {
    const schema = createConversationSchema(limits);
    assert.deepEqual(await fieldErrors(readJson(post('{"metadata":{"a b":"x"}}'), schema, 1000)), [
      'metadata/a b: metadata keys are 1 to 64 ASCII letters, digits, _ . or -',
    ]);
    assert.deepEqual(
      await fieldErrors(readJson(post('{"content":"hi","name":"zo\u00eb"}'), sendMessageSchema(limits), 1000)),
      ['name: name is 1 to 64 ASCII letters, digits, _ or -'],
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
