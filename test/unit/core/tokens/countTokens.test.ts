import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EncodingName, Tokenizer } from '../../../../src/core/ports';
import {
  countMessageTokens,
  countPromptTokens,
  REPLY_PRIMING_TOKENS,
  TOKENS_PER_MESSAGE,
  TOKENS_PER_NAME,
  tokensUnder,
  withCountsUnder,
} from '../../../../src/core/tokens/countTokens';

/** One token per whitespace-separated word; remembers every text it was asked to count. */
class WordTokenizer implements Tokenizer {
  readonly counted: string[] = [];
  constructor(readonly encoding: EncodingName = 'o200k_base') {}
  countTokens(text: string): number {
    this.counted.push(text);
    return text.split(/\s+/).filter((word) => word.length > 0).length;
  }
  specialTokens(): readonly string[] {
    return [];
  }
}

test("the guide's constants: 3 per message, 1 per name, 3 for the reply priming", () => {
  assert.equal(TOKENS_PER_MESSAGE, 3);
  assert.equal(TOKENS_PER_NAME, 1);
  assert.equal(REPLY_PRIMING_TOKENS, 3);
});

test('a message costs 3 + len(role) + len(content)', () => {
  const tokenizer = new WordTokenizer();
  assert.equal(countMessageTokens({ role: 'user', content: 'one two three four' }, tokenizer), 3 + 1 + 4);
  assert.deepEqual(tokenizer.counted, ['user', 'one two three four']);
});

test('a name costs its encoded length plus 1', () => {
  const tokenizer = new WordTokenizer();
  const withName = countMessageTokens({ role: 'user', content: 'hi there', name: 'example user' }, tokenizer);
  const withoutName = countMessageTokens({ role: 'user', content: 'hi there' }, tokenizer);
  assert.equal(withName - withoutName, 2 + 1);
  assert.ok(tokenizer.counted.includes('example user'), 'the name itself is encoded');
});

test('a prompt costs the sum of its messages plus 3 for the reply priming', () => {
  const tokenizer = new WordTokenizer();
  const messages = [
    { role: 'system' as const, content: 'be brief' },
    { role: 'user' as const, content: 'hello' },
    { role: 'assistant' as const, content: 'hi, how can I help' },
  ];
  assert.equal(countPromptTokens(messages, tokenizer), 3 + 1 + 2 + (3 + 1 + 1) + (3 + 1 + 5) + 3);
  assert.equal(countPromptTokens([], tokenizer), REPLY_PRIMING_TOKENS);
});

test('tokensUnder reuses a count made under the same encoding without encoding anything', () => {
  const tokenizer = new WordTokenizer('o200k_base');
  const stored = { role: 'user' as const, content: 'three little words', tokens: 42, encoding: 'o200k_base' as const };
  assert.equal(tokensUnder(stored, tokenizer), 42);
  assert.equal(tokenizer.counted.length, 0);
});

test('tokensUnder recounts a message counted under another encoding', () => {
  const tokenizer = new WordTokenizer('o200k_base');
  const stored = { role: 'user' as const, content: 'three little words', tokens: 42, encoding: 'cl100k_base' as const };
  assert.equal(tokensUnder(stored, tokenizer), 3 + 1 + 3);
  assert.deepEqual(tokenizer.counted, ['user', 'three little words']);
});

test('withCountsUnder keeps matching counts, recounts the others, and keeps names', () => {
  const tokenizer = new WordTokenizer('o200k_base');
  const counted = withCountsUnder(
    [
      { role: 'user', content: 'a b', tokens: 100, encoding: 'o200k_base' },
      { role: 'assistant', content: 'c d e', tokens: 100, encoding: 'cl100k_base', name: 'bot' },
    ],
    tokenizer,
  );
  assert.deepEqual(counted, [
    { role: 'user', content: 'a b', tokens: 100 },
    { role: 'assistant', content: 'c d e', name: 'bot', tokens: 3 + 1 + 3 + 1 + 1 },
  ]);
});
