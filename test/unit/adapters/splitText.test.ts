import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MAX_STRING_PROPERTY_CHARS,
  partName,
  readLongText,
  splitText,
  writeLongText,
} from '../../../src/adapters/splitText';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('splitText', () => {
  test('short and empty texts are one chunk', () => {
    assert.deepEqual(splitText(''), ['']);
    assert.deepEqual(splitText('hello'), ['hello']);
    assert.deepEqual(splitText('x'.repeat(MAX_STRING_PROPERTY_CHARS)), ['x'.repeat(MAX_STRING_PROPERTY_CHARS)]);
  });

  test('long texts split at the limit', () => {
    const chunks = splitText('x'.repeat(MAX_STRING_PROPERTY_CHARS * 2 + 1));
    assert.deepEqual(
      chunks.map((chunk) => chunk.length),
      [MAX_STRING_PROPERTY_CHARS, MAX_STRING_PROPERTY_CHARS, 1],
    );
  });

  test('the lone-surrogate check used below does detect a split pair', () => {
    assert.match('\u{1F600}'.slice(0, 1), LONE_SURROGATE);
    assert.doesNotMatch('\u{1F600}', LONE_SURROGATE);
  });

  test('a surrogate pair on the boundary moves whole to the next chunk', () => {
    const text = 'abc' + '\u{1F600}' + 'def'; // the emoji occupies code units 3 and 4
    assert.deepEqual(splitText(text, 4), ['abc', '\u{1F600}de', 'f']);
    for (const chunk of splitText('a' + '\u{1F600}'.repeat(50), 4)) {
      assert.doesNotMatch(chunk, LONE_SURROGATE, JSON.stringify(chunk));
    }
    assert.equal(splitText('a' + '\u{1F600}'.repeat(50), 4).join(''), 'a' + '\u{1F600}'.repeat(50));
  });

  test('writeLongText and readLongText round-trip through numbered properties', () => {
    const text = 'y'.repeat(MAX_STRING_PROPERTY_CHARS - 1) + '\u{1F389}' + 'z'.repeat(40_000);
    const entity: Record<string, unknown> = {};
    writeLongText(entity, 'content', text);
    assert.deepEqual(Object.keys(entity), ['content', 'content_1', 'content_2']);
    assert.equal((entity['content'] as string).length, MAX_STRING_PROPERTY_CHARS - 1);
    assert.equal(readLongText(entity, 'content'), text);
    assert.equal(readLongText(entity, 'missing'), undefined);
    assert.equal(readLongText({ content: '' }, 'content'), '');
    assert.equal(partName('content', 0), 'content');
    assert.equal(partName('content', 3), 'content_3');
  });
});
