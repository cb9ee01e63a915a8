import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_BATCH_BYTES, MAX_JSON_BYTES_PER_TOKEN, maxStorableReplyTokens } from '../../../src/adapters/entitySize';
import { loadConfig } from '../../../src/config';

// js-tiktoken's rank files, as the library ships them (lines of base64 tokens).
/* eslint-disable @typescript-eslint/no-require-imports -- the CommonJS rank builds, as the tokenizer adapter loads them */
const rankFiles: Record<string, { bpe_ranks: string }> = {
  o200k_base: require('js-tiktoken/ranks/o200k_base'),
  cl100k_base: require('js-tiktoken/ranks/cl100k_base'),
};
/* eslint-enable @typescript-eslint/no-require-imports */

describe('how long a reply one transaction holds', () => {
  it('bounds a token by 128 JSON bytes and 128 UTF-16 units, over every token of both vocabularies', () => {
    const decoder = new TextDecoder('utf-8', { fatal: false });
    for (const [name, ranks] of Object.entries(rankFiles)) {
      let worstBytes = 0;
      let worstUnits = 0;
      for (const line of ranks.bpe_ranks.split('\n')) {
        for (const token of line.split(' ').slice(1)) {
          // Decoded alone (a partial character becomes U+FFFD, the worst it can be in a reply), NUL replaced.
          const text = decoder.decode(Buffer.from(token, 'base64')).replaceAll('\u0000', '\ufffd');
          worstBytes = Math.max(worstBytes, Buffer.byteLength(JSON.stringify(text)) - 2);
          worstUnits = Math.max(worstUnits, text.length);
        }
      }
      assert.ok(worstBytes <= MAX_JSON_BYTES_PER_TOKEN, `${name}: a token takes ${worstBytes} JSON bytes`);
      assert.ok(worstUnits <= MAX_JSON_BYTES_PER_TOKEN, `${name}: a token takes ${worstUnits} UTF-16 units`);
    }
  });

  it('caps CHAT_MAX_RESPONSE_TOKENS at start by what fits beside the longest user message', () => {
    assert.equal(maxStorableReplyTokens(100_000), 27_568);
    assert.ok(maxStorableReplyTokens(100_000) * MAX_JSON_BYTES_PER_TOKEN + 600_000 < MAX_BATCH_BYTES);
    const base = {
      TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
      AZURE_OPENAI_ENDPOINT: 'https://example.openai.azure.com/',
      AZURE_OPENAI_DEPLOYMENT: 'chat',
    };
    assert.equal(loadConfig({ ...base, CHAT_MAX_RESPONSE_TOKENS: '27568' }).chat.maxResponseTokens, 27_568);
    assert.throws(
      () => loadConfig({ ...base, CHAT_MAX_RESPONSE_TOKENS: '128000' }),
      /CHAT_MAX_RESPONSE_TOKENS: must be at most 27568 with CHAT_MAX_MESSAGE_CHARS 100000/,
    );
    assert.throws(
      () => loadConfig({ ...base, CHAT_MAX_MESSAGE_CHARS: '400000', CHAT_MAX_RESPONSE_TOKENS: '20000' }),
      /CHAT_MAX_RESPONSE_TOKENS: must be at most 13506/,
    );
  });
});
