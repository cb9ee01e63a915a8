import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RestError } from '@azure/data-tables';
import { isUnavailable } from '../../../src/adapters/tableConversationStore';

describe('isUnavailable', () => {
  test('connection failures, timeouts, throttling and 5xx mean storage did not answer', () => {
    assert.equal(isUnavailable(new RestError('connect ECONNREFUSED', { code: 'ECONNREFUSED' })), true);
    assert.equal(isUnavailable(new RestError('socket hang up', { code: 'ECONNRESET' })), true);
    assert.equal(isUnavailable(new RestError('busy', { statusCode: 503 })), true);
    assert.equal(isUnavailable(new RestError('oops', { statusCode: 500 })), true);
    assert.equal(isUnavailable(new RestError('slow', { statusCode: 408 })), true);
    assert.equal(isUnavailable(Object.assign(new Error('aborted'), { name: 'AbortError' })), true);
    assert.equal(isUnavailable(Object.assign(new Error('no token'), { name: 'CredentialUnavailableError' })), true);
  });

  test('storage refusing the app identity, or a certificate it cannot verify, is unavailability (503), not a bug (500)', () => {
    assert.equal(isUnavailable(new RestError('forbidden', { statusCode: 403 })), true);
    assert.equal(isUnavailable(new RestError('no token', { statusCode: 401 })), true);
    assert.equal(isUnavailable(new RestError('self-signed', { code: 'SELF_SIGNED_CERT_IN_CHAIN' })), true);
    assert.equal(isUnavailable(Object.assign(new Error('self-signed'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })), true);
  });

  test('answers from storage and programming errors are not unavailability', () => {
    assert.equal(isUnavailable(new RestError('not found', { statusCode: 404 })), false);
    assert.equal(isUnavailable(new RestError('conflict', { statusCode: 409 })), false);
    assert.equal(isUnavailable(new RestError('precondition', { statusCode: 412 })), false);
    assert.equal(isUnavailable(new RestError('bad body', { code: 'PARSE_ERROR' })), false);
    assert.equal(isUnavailable(new TypeError('x is undefined')), false);
    assert.equal(isUnavailable('a string'), false);
  });

  test("a RestError from another copy of the Azure core packages (the bundle's lazy/storage-queue.js) is recognised", async () => {
    // The ES module build's class: a different class from the CommonJS build's that @azure/data-tables gives tsx.
    const esm = (await import('@azure/core-rest-pipeline')) as { RestError: typeof RestError };
    assert.notEqual(esm.RestError, RestError);
    assert.equal(isUnavailable(new esm.RestError('busy', { statusCode: 503 })), true);
    assert.equal(isUnavailable(new esm.RestError('forbidden', { statusCode: 403 })), true);
    assert.equal(isUnavailable(new esm.RestError('connect ECONNREFUSED', { code: 'ECONNREFUSED' })), true);
    assert.equal(isUnavailable(new esm.RestError('not found', { statusCode: 404 })), false);
  });
});
