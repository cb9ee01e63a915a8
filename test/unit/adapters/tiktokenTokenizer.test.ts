import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TiktokenModel } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { CHATML_SPECIAL_TOKENS, encodeChatML, getTokenizer } from '../../../src/adapters/tiktokenTokenizer';
import type { ChatMessage, EncodingName } from '../../../src/core/ports';
import { renderChatML } from '../../../src/core/tokens/chatml';
import { countMessageTokens, countPromptTokens } from '../../../src/core/tokens/countTokens';
import { resolveModel } from '../../../src/core/tokens/modelInfo';
import { CHATML_MARKERS, findSpecialTokenMarkup } from '../../../src/core/tokens/specialTokens';

// js-tiktoken's own model table, to cross-check resolveModel (required: the package's types are ESM-only).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { getEncodingNameForModel } = require('js-tiktoken/lite') as {
  getEncodingNameForModel(model: TiktokenModel): string;
};

const ranksLoaded = (encoding: EncodingName) =>
  require.cache[require.resolve(`js-tiktoken/ranks/${encoding}`)] !== undefined;

// The Azure OpenAI chat guide's recorded request: the service answered prompt_tokens 29, completion_tokens 73.
const GUIDE_REQUEST: ChatMessage[] = [
  { role: 'system', content: 'Assistant is a large language model trained by OpenAI.' },
  { role: 'user', content: 'Who were the founders of Microsoft?' },
];
const GUIDE_REPLY =
  'Microsoft was founded by Bill Gates and Paul Allen. They established the company on April 4, 1975. Bill Gates ' +
  'served as the CEO of Microsoft until 2000 and later as Chairman and Chief Software Architect until his ' +
  'retirement in 2008, while Paul Allen left the company in 1983 but remained on the board of directors until 2000.';

/** Every special id of both encodings (from the js-tiktoken ranks) plus the ChatML extension. */
const SPECIAL_IDS = new Set([100257, 100258, 100259, 100260, 100276, 100264, 100265, 199999, 200018]);

// Must stay the first test: it observes the process before any encoding is used.
test('ranks load lazily: not at import, not at getTokenizer, only for the encoding first used', () => {
  assert.equal(ranksLoaded('o200k_base'), false);
  assert.equal(ranksLoaded('cl100k_base'), false);
  const tokenizer = getTokenizer('o200k_base');
  assert.equal(tokenizer.loaded, false);
  assert.equal(ranksLoaded('o200k_base'), false);

  assert.equal(tokenizer.countTokens('hello world'), 2);
  assert.equal(tokenizer.loaded, true);
  assert.equal(ranksLoaded('o200k_base'), true);
  assert.equal(ranksLoaded('cl100k_base'), false, 'cl100k_base is not loaded for an o200k_base model');
});

test('one tokenizer per encoding per process', () => {
  assert.equal(getTokenizer('o200k_base'), getTokenizer('o200k_base'));
  assert.equal(getTokenizer('cl100k_base'), getTokenizer('cl100k_base'));
  assert.notEqual(getTokenizer('o200k_base'), getTokenizer('cl100k_base'));
  assert.equal(getTokenizer('cl100k_base').encoding, 'cl100k_base');
});

test("the guide's recorded request counts 29 prompt tokens with gpt-35-turbo (cl100k_base), as the service did", () => {
  const tokenizer = getTokenizer(resolveModel('gpt-35-turbo').encoding);
  assert.equal(tokenizer.encoding, 'cl100k_base');
  assert.equal(countPromptTokens(GUIDE_REQUEST, tokenizer), 29);
  // 3 + len("system")=1 + len(content)=11, 3 + len("user")=1 + len(content)=7, + 3 priming.
  assert.deepEqual(
    GUIDE_REQUEST.map((message) => countMessageTokens(message, tokenizer)),
    [15, 11],
  );
});

test("the guide's recorded request also counts 29 with gpt-4o (o200k_base), the model the current guide names", () => {
  const tokenizer = getTokenizer(resolveModel('gpt-4o').encoding);
  assert.equal(tokenizer.encoding, 'o200k_base');
  assert.equal(countPromptTokens(GUIDE_REQUEST, tokenizer), 29);
});

test("the guide's printed reply counts 73 completion tokens (its content alone) under both encodings", () => {
  assert.equal(getTokenizer('cl100k_base').countTokens(GUIDE_REPLY), 73);
  assert.equal(getTokenizer('o200k_base').countTokens(GUIDE_REPLY), 73);
});

test('the ChatML vector: cl100k_base with <|im_start|>=100264 and <|im_end|>=100265 allowed', () => {
  assert.deepEqual(
    encodeChatML('<|im_start|>user\nHello<|im_end|><|im_start|>assistant'),
    [100264, 882, 198, 9906, 100265, 100264, 78191],
  );
  assert.deepEqual(CHATML_SPECIAL_TOKENS, { '<|im_start|>': 100264, '<|im_end|>': 100265 });
});

test('a rendered ChatML prompt encodes its delimiters as special ids and ends priming the assistant', () => {
  const ids = encodeChatML(renderChatML(GUIDE_REQUEST));
  assert.equal(ids[0], 100264);
  assert.equal(ids.filter((id) => id === 100264).length, 3);
  assert.equal(ids.filter((id) => id === 100265).length, 2);
  assert.deepEqual(ids.slice(-3), [100264, 78191, 198]);
});

test('special-token strings in user text neither throw nor become special ids, in either encoding', () => {
  for (const encoding of ['cl100k_base', 'o200k_base'] as const) {
    const tokenizer = getTokenizer(encoding);
    for (const marker of new Set([...CHATML_MARKERS, ...tokenizer.specialTokens()])) {
      const text = `before ${marker} after`;
      const ids = tokenizer.encode(text);
      assert.ok(
        ids.every((id) => !SPECIAL_IDS.has(id)),
        `${encoding}: ${marker} became a special id`,
      );
      assert.ok(tokenizer.countTokens(marker) > 1, `${encoding}: ${marker} counted as one special token`);
      assert.equal(tokenizer.countTokens(text), ids.length);
    }
  }
  // The ChatML extension of cl100k_base does not leak into counting: it stays ordinary text there too.
  const cl100k = getTokenizer('cl100k_base');
  assert.deepEqual(cl100k.encode('<|im_start|>user'), [27, 91, 318, 5011, 91, 29, 882]);
});

test("specialTokens() lists the encoding's own special tokens, which the guard then catches", () => {
  assert.deepEqual([...getTokenizer('cl100k_base').specialTokens()].sort(), [
    '<|endofprompt|>',
    '<|endoftext|>',
    '<|fim_middle|>',
    '<|fim_prefix|>',
    '<|fim_suffix|>',
  ]);
  assert.deepEqual([...getTokenizer('o200k_base').specialTokens()].sort(), ['<|endofprompt|>', '<|endoftext|>']);
  assert.deepEqual(findSpecialTokenMarkup('x <|endoftext|> y', getTokenizer('o200k_base')), ['<|endoftext|>']);
});

test('stats count one encode call per countTokens and the tokens produced', () => {
  const tokenizer = getTokenizer('o200k_base');
  const before = { ...tokenizer.stats };
  tokenizer.countTokens('hello world');
  tokenizer.countTokens('Who were the founders of Microsoft?');
  assert.equal(tokenizer.stats.encodeCalls - before.encodeCalls, 2);
  assert.equal(tokenizer.stats.tokensEncoded - before.tokensEncoded, 2 + 7);
});

test("resolveModel's encoding agrees with js-tiktoken's table for every named family and dated variant", () => {
  const models: TiktokenModel[] = [
    'gpt-35-turbo',
    'gpt-3.5-turbo',
    'gpt-3.5-turbo-0613',
    'gpt-3.5-turbo-16k',
    'gpt-4',
    'gpt-4-0613',
    'gpt-4-32k',
    'gpt-4-32k-0613',
    'gpt-4-turbo',
    'gpt-4-turbo-2024-04-09',
    'gpt-4-1106-preview',
    'gpt-4o',
    'gpt-4o-2024-08-06',
    'gpt-4o-mini',
    'gpt-4o-mini-2024-07-18',
    'gpt-4.1',
    'gpt-4.1-2025-04-14',
    'gpt-4.1-mini',
    'gpt-4.1-nano-2025-04-14',
    'gpt-5',
    'gpt-5-2025-08-07',
    'gpt-5-mini',
    'gpt-5-nano',
    'gpt-5-chat-latest',
    'o1',
    'o1-2024-12-17',
    'o1-mini',
    'o3',
    'o3-2025-04-16',
    'o3-mini',
    'o3-mini-2025-01-31',
    'o4-mini',
    'o4-mini-2025-04-16',
  ];
  for (const model of models) {
    const info = resolveModel(model, () => assert.fail(`${model} should be known`));
    assert.equal(info.encoding, getEncodingNameForModel(model), model);
  }
});
