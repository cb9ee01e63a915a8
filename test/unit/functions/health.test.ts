/** This file runs in a process of its own (node --test), so the settings read here are its own. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HttpRequest, InvocationContext } from '@azure/functions';
import { health } from '../../../src/functions/health';

describe('GET /api/health with invalid settings', () => {
  it('answers 503 configuration_invalid naming the settings, not their values', async () => {
    Object.assign(process.env, {
      TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
      AZURE_OPENAI_ENDPOINT: 'http://127.0.0.1:9',
      AZURE_OPENAI_DEPLOYMENT: 'chat',
      AZURE_OPENAI_API_KEY: 'test-key',
      CHAT_TRIM_POLICY: 'bogus-policy',
      AUTH_MODE: 'none',
    });
    const response = await health(
      new HttpRequest({ method: 'GET', url: 'http://127.0.0.1/api/health' }),
      new InvocationContext({ invocationId: 'health-test' }),
    );
    assert.equal(response.status, 503);
    assert.equal((response.headers as Record<string, string>)['Content-Type'], 'application/problem+json');
    const body = JSON.parse(String(response.body)) as Record<string, unknown>;
    assert.equal(body.code, 'configuration_invalid');
    assert.deepEqual(body.settings, ['CHAT_TRIM_POLICY']);
    assert.doesNotMatch(String(response.body), /bogus-policy/);
  });
});
