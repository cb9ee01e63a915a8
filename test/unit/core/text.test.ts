import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isStorableText, isWellFormed, toStorableText, truncateText } from '../../../src/core/text';

describe('text rules', () => {
  it('tells unpaired surrogates from pairs, at every position', () => {
    for (const bad of ['\ud800', '\udfff', 'a\ud800', '\udc00a', 'a\ud83db', '\ude00\ud83d'])
      assert.equal(isWellFormed(bad), false, JSON.stringify(bad));
    for (const good of ['', 'a', '😀', 'a😀b', '\ufffd', '👩‍💻'])
      assert.equal(isWellFormed(good), true, JSON.stringify(good));
  });

  it('refuses NUL beside unpaired surrogates, and replaces both in text the app did not choose', () => {
    assert.equal(isStorableText('a\u0000b'), false);
    assert.equal(isStorableText('a\u0001b'), true);
    assert.equal(toStorableText('a\ud800b\u0000c\udfff😀'), 'a\ufffdb\ufffdc\ufffd😀');
    assert.ok(isStorableText(toStorableText('\udfff\ud800')));
  });

  it('truncates without splitting a surrogate pair', () => {
    assert.equal(truncateText('ab😀', 3), 'ab');
    assert.equal(truncateText('ab😀', 4), 'ab😀');
    assert.equal(truncateText('a😀b', 3), 'a😀');
    assert.equal(truncateText('short', 10), 'short');
  });
});
