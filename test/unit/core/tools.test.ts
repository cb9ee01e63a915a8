import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { boundToolOutput } from '../../../src/core/tools';

describe('boundToolOutput', () => {
  it('keeps short outputs whole and bounds long ones to exactly the limit, with a note', () => {
    assert.equal(boundToolOutput('short', 100), 'short');
    const bounded = boundToolOutput('a'.repeat(200_000), 1_000);
    assert.equal(bounded.length, 1_000);
    assert.match(bounded, /^a+\n\[tool output truncated: first 9\d\d of 200000 characters\]$/);
  });

  it('never splits a surrogate pair', () => {
    const emoji = '😀'.repeat(1_000);
    for (let limit = 100; limit < 110; limit++) {
      const bounded = boundToolOutput(emoji, limit);
      assert.ok(bounded.length <= limit);
      assert.doesNotMatch(bounded, /[\uD800-\uDBFF](?![\uDC00-\uDFFF])/, `lone high surrogate at ${limit}`);
    }
  });
});
