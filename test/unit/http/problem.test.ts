import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvocationContext } from '@azure/functions';
import {
  ChatError,
  ContentFilteredError,
  InvalidRequestError,
  PROBLEM_CODES,
  RateLimitedError,
  UpstreamError,
} from '../../../src/core/errors';
import { problemResponse } from '../../../src/http/problem';

const quietContext = () => new InvocationContext({ invocationId: 'inv-1', functionName: 'test', logHandler: () => {} });

describe('problemResponse', () => {
  it('maps a ChatError to problem+json with its code, status, detail, extensions and headers', () => {
    const response = problemResponse(new RateLimitedError('Slow down.', 12.2), quietContext(), '/api/x');
    assert.equal(response.status, 429);
    const headers = response.headers as Record<string, string>;
    assert.equal(headers['Content-Type'], 'application/problem+json');
    assert.equal(headers['Retry-After'], '13');
    const body = JSON.parse(String(response.body));
    assert.deepEqual(body, {
      type: 'urn:chat-api:problem:rate_limited',
      title: 'Too many requests',
      status: 429,
      detail: 'Slow down.',
      code: 'rate_limited',
      retryAfterSeconds: 13,
      instance: '/api/x',
      requestId: 'inv-1',
    });
  });

  it('keeps field errors and filter categories as extensions', () => {
    const invalid = JSON.parse(
      String(
        problemResponse(new InvalidRequestError('bad', [{ field: 'content', message: 'empty' }]), quietContext()).body,
      ),
    );
    assert.deepEqual(invalid.errors, [{ field: 'content', message: 'empty' }]);
    const filtered = JSON.parse(
      String(
        problemResponse(new ContentFilteredError({ hate: { filtered: true, severity: 'high' } }), quietContext()).body,
      ),
    );
    assert.equal(filtered.status, 422);
    assert.deepEqual(filtered.categories, { hate: { filtered: true, severity: 'high' } });
  });

  it('answers an unexpected error as an opaque 500 without its message or stack', () => {
    const secret = new Error('connection string AccountKey=abc123 leaked');
    const response = problemResponse(secret, quietContext());
    assert.equal(response.status, 500);
    const text = String(response.body);
    assert.doesNotMatch(text, /AccountKey|abc123|at .*\.ts/);
    assert.equal(JSON.parse(text).code, 'internal_error');
  });

  it('does not leak an upstream cause', () => {
    const error = new UpstreamError('upstream_error', 'The model answered with HTTP 500.', {
      cause: new Error('api-key sk-secret rejected'),
    });
    const text = String(problemResponse(error, quietContext()).body);
    assert.doesNotMatch(text, /sk-secret/);
    assert.equal(JSON.parse(text).status, 502);
  });

  it('lists every code a ChatError can carry', () => {
    const samples: ChatError[] = [
      new RateLimitedError('x', 1),
      new RateLimitedError('x', 1, 'quota_exceeded'),
      new UpstreamError('upstream_timeout', 'x'),
      new UpstreamError('upstream_unavailable', 'x'),
    ];
    for (const error of samples) assert.ok((PROBLEM_CODES as readonly string[]).includes(error.code), error.code);
  });
});
