import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getTokenizer } from '../../../../src/adapters/tiktokenTokenizer';
import type { ChatMessage, ToolDefinition } from '../../../../src/core/ports';
import { countPromptTokens } from '../../../../src/core/tokens/countTokens';
import { countToolDefinitionTokens } from '../../../../src/core/tokens/countTools';

// The cookbook's published check ("How to count tokens with tiktoken", section 7): this tool and these messages
// counted 101 prompt tokens on gpt-4o and gpt-4o-mini and 105 on gpt-4 and gpt-3.5-turbo, by its method and by the API.
const weather: ToolDefinition = {
  name: 'get_current_weather',
  description: 'Get the current weather in a given location',
  parameters: {
    type: 'object',
    properties: {
      location: { type: 'string', description: 'The city and state, e.g. San Francisco, CA' },
      unit: { type: 'string', description: 'The unit of temperature to return', enum: ['celsius', 'fahrenheit'] },
    },
    required: ['location'],
  },
};
const messages: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant that can answer to questions about the weather.' },
  { role: 'user', content: "What's the weather like in San Francisco?" },
];

describe('countToolDefinitionTokens (the cookbook method)', () => {
  it('gives the cookbook vector: 101 with o200k_base (gpt-4o), 105 with cl100k_base (gpt-4)', () => {
    for (const [encoding, expected] of [
      ['o200k_base', 101],
      ['cl100k_base', 105],
    ] as const) {
      const tokenizer = getTokenizer(encoding);
      assert.equal(countPromptTokens(messages, tokenizer) + countToolDefinitionTokens([weather], tokenizer), expected);
    }
  });

  it('adds nothing without tools, and drops one trailing period from descriptions', () => {
    const tokenizer = getTokenizer('o200k_base');
    assert.equal(countToolDefinitionTokens([], tokenizer), 0);
    const withPeriod = { ...weather, description: `${weather.description}.` };
    assert.equal(countToolDefinitionTokens([withPeriod], tokenizer), countToolDefinitionTokens([weather], tokenizer));
  });

  it('counts a property without type or description, and a type list, instead of failing', () => {
    const tokenizer = getTokenizer('o200k_base');
    const odd: ToolDefinition = {
      name: 'odd',
      description: '',
      parameters: { type: 'object', properties: { a: {}, b: { type: ['string', 'null'] } } },
    };
    // 7 + "odd:" + 3 + (3 + "a::") + (3 + "b:string,null:") + 12
    const expected =
      7 +
      tokenizer.countTokens('odd:') +
      3 +
      3 +
      tokenizer.countTokens('a::') +
      3 +
      tokenizer.countTokens('b:string,null:') +
      12;
    assert.equal(countToolDefinitionTokens([odd], tokenizer), expected);
  });
});
