import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveModel, UNKNOWN_MODEL_CONTEXT_WINDOW } from '../../../../src/core/tokens/modelInfo';

const noWarning = (message: string) => assert.fail(`unexpected warning: ${message}`);

test('each named family resolves to its encoding, context window and reasoning flag', () => {
  const expected: [model: string, family: string, encoding: string, contextWindow: number, reasoning: boolean][] = [
    ['gpt-35-turbo', 'gpt-35-turbo', 'cl100k_base', 4096, false],
    ['gpt-3.5-turbo', 'gpt-35-turbo', 'cl100k_base', 4096, false],
    ['gpt-35-turbo-16k', 'gpt-35-turbo-16k', 'cl100k_base', 16_384, false],
    ['gpt-4', 'gpt-4', 'cl100k_base', 8192, false],
    ['gpt-4-32k', 'gpt-4-32k', 'cl100k_base', 32_768, false],
    ['gpt-4-turbo', 'gpt-4-turbo', 'cl100k_base', 128_000, false],
    ['gpt-4o', 'gpt-4o', 'o200k_base', 128_000, false],
    ['gpt-4o-mini', 'gpt-4o-mini', 'o200k_base', 128_000, false],
    ['gpt-4.1', 'gpt-4.1', 'o200k_base', 1_047_576, false],
    ['gpt-4.1-mini', 'gpt-4.1-mini', 'o200k_base', 1_047_576, false],
    ['gpt-4.1-nano', 'gpt-4.1-nano', 'o200k_base', 1_047_576, false],
    ['gpt-5', 'gpt-5', 'o200k_base', 272_000, true],
    ['gpt-5-mini', 'gpt-5-mini', 'o200k_base', 272_000, true],
    ['gpt-5-nano', 'gpt-5-nano', 'o200k_base', 272_000, true],
    ['gpt-5-chat', 'gpt-5-chat', 'o200k_base', 128_000, true],
    ['gpt-5.1', 'gpt-5', 'o200k_base', 272_000, true],
    ['gpt-5.1-chat', 'gpt-5-chat', 'o200k_base', 128_000, true],
    ['o1', 'o1', 'o200k_base', 200_000, true],
    ['o1-mini', 'o1-mini', 'o200k_base', 128_000, true],
    ['o3', 'o3', 'o200k_base', 200_000, true],
    ['o3-mini', 'o3-mini', 'o200k_base', 200_000, true],
    ['o4-mini', 'o4-mini', 'o200k_base', 200_000, true],
  ];
  for (const [model, family, encoding, contextWindow, reasoning] of expected) {
    assert.deepEqual(
      resolveModel(model, noWarning),
      { model, family, encoding, contextWindow, reasoning, known: true },
      model,
    );
  }
});

test('dated variants resolve to their family', () => {
  const variants: [model: string, family: string][] = [
    ['gpt-4o-2024-08-06', 'gpt-4o'],
    ['gpt-4o-2024-05-13', 'gpt-4o'],
    ['gpt-4o-mini-2024-07-18', 'gpt-4o-mini'],
    ['gpt-4.1-2025-04-14', 'gpt-4.1'],
    ['gpt-4.1-mini-2025-04-14', 'gpt-4.1-mini'],
    ['gpt-5-2025-08-07', 'gpt-5'],
    ['gpt-5-mini-2025-08-07', 'gpt-5-mini'],
    ['o1-2024-12-17', 'o1'],
    ['o3-mini-2025-01-31', 'o3-mini'],
    ['o4-mini-2025-04-16', 'o4-mini'],
    ['gpt-35-turbo-0125', 'gpt-35-turbo'],
    ['gpt-3.5-turbo-0613', 'gpt-35-turbo'],
    ['gpt-4-0613', 'gpt-4'],
    ['gpt-4-32k-0613', 'gpt-4-32k'],
    ['gpt-4-turbo-2024-04-09', 'gpt-4-turbo'],
    ['gpt-4-0125-preview', 'gpt-4-turbo'],
  ];
  for (const [model, family] of variants) assert.equal(resolveModel(model, noWarning).family, family, model);
});

test('longer names win over their prefixes (gpt-4-32k, gpt-4-turbo, gpt-4o, gpt-4.1 are not gpt-4)', () => {
  assert.equal(resolveModel('gpt-4-32k', noWarning).contextWindow, 32_768);
  assert.equal(resolveModel('gpt-4-turbo', noWarning).contextWindow, 128_000);
  assert.equal(resolveModel('gpt-4o', noWarning).encoding, 'o200k_base');
  assert.equal(resolveModel('gpt-4.1', noWarning).encoding, 'o200k_base');
  assert.equal(resolveModel('gpt-4o-mini', noWarning).family, 'gpt-4o-mini');
  assert.equal(resolveModel('o3-mini', noWarning).family, 'o3-mini');
});

test('names are case-insensitive and trimmed', () => {
  assert.equal(resolveModel('GPT-4O-Mini', noWarning).family, 'gpt-4o-mini');
  assert.equal(resolveModel('  GPT-35-Turbo ', noWarning).encoding, 'cl100k_base');
  assert.equal(resolveModel('  GPT-35-Turbo ', noWarning).model, 'GPT-35-Turbo');
});

test('an unknown model gets o200k_base and the default window, and is reported as unknown', () => {
  const info = resolveModel('contoso-chat-unit-a', () => {});
  assert.deepEqual(info, {
    model: 'contoso-chat-unit-a',
    family: 'contoso-chat-unit-a',
    encoding: 'o200k_base',
    contextWindow: UNKNOWN_MODEL_CONTEXT_WINDOW,
    reasoning: false,
    known: false,
  });
  // Lookalikes of known names are unknown too, not silently matched.
  for (const model of ['gpt-4ox-unit', 'my-gpt-4o-unit', 'gpt-45-unit']) {
    assert.equal(resolveModel(model, () => {}).known, false, model);
  }
});

test('the unknown-model warning names the model and is logged once per process per name', () => {
  const warnings: string[] = [];
  const warn = (message: string) => warnings.push(message);
  resolveModel('contoso-chat-unit-b', warn);
  resolveModel('contoso-chat-unit-b', warn);
  resolveModel('CONTOSO-CHAT-UNIT-B', warn);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /contoso-chat-unit-b/);
  assert.match(warnings[0]!, /o200k_base/);
  assert.match(warnings[0]!, /AZURE_OPENAI_MODEL/);
  // Once per process, not per caller: another warn function is not called for the same name.
  resolveModel('contoso-chat-unit-b', () => assert.fail('warned twice'));
  resolveModel('contoso-chat-unit-c', warn);
  assert.equal(warnings.length, 2);
  assert.match(warnings[1]!, /contoso-chat-unit-c/);
});

test('reasoning models (which take max_completion_tokens) are the o-series and gpt-5', () => {
  for (const model of ['o1', 'o3', 'o3-mini', 'o4-mini', 'gpt-5', 'gpt-5-mini', 'gpt-5-nano', 'gpt-5.1']) {
    assert.equal(resolveModel(model, noWarning).reasoning, true, model);
  }
  for (const model of ['gpt-35-turbo', 'gpt-4', 'gpt-4-turbo', 'gpt-4o', 'gpt-4o-mini', 'gpt-4.1']) {
    assert.equal(resolveModel(model, noWarning).reasoning, false, model);
  }
});
