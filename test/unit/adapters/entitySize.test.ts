import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertBatchFits,
  assertEntityFits,
  batchPayloadBytes,
  entitySizeBytes,
  MAX_ENTITY_BYTES,
  userPropertyCount,
} from '../../../src/adapters/entitySize';

describe('entitySize', () => {
  test('counts as the service does: UTF-16 strings, names and per-property overhead', () => {
    // 4 + 2*(1+1) + [8 + 2*7 + (4 + 2*13)] + [8 + 2*3 + 4] + [8 + 2*4 + 8]
    const entity = { partitionKey: 'p', rowKey: 'r', Address: 'Mountain View', Age: 23, Amount: 200.23, etag: 'W/"x"' };
    assert.equal(entitySizeBytes(entity), 4 + 4 + (8 + 14 + 30) + (8 + 6 + 4) + (8 + 12 + 8));
    assert.equal(userPropertyCount(entity), 3);
    // An emoji is two UTF-16 code units: 4 bytes, whatever its UTF-8 length.
    assert.equal(entitySizeBytes({ s: '\u{1F600}' }) - entitySizeBytes({ s: '' }), 4);
    assert.equal(entitySizeBytes({ big: { type: 'Double', value: 1.7e12 } }), 4 + 8 + 6 + 8);
  });

  test('an entity is refused over 1 MiB counted as UTF-16 even when its UTF-8 is far smaller', () => {
    const fits = { partitionKey: 'p', rowKey: 'r', content: 'x'.repeat(400_000) };
    assert.doesNotThrow(() => assertEntityFits(fits, 'Message 1'));
    const tooBig = { partitionKey: 'p', rowKey: 'r', content: 'x'.repeat(MAX_ENTITY_BYTES / 2) };
    assert.throws(() => assertEntityFits(tooBig, 'Message 1'), /Message 1 needs \d+ bytes .* over the 1048576-byte/);
  });

  test('more than 252 properties is refused', () => {
    const entity: Record<string, unknown> = { partitionKey: 'p', rowKey: 'r' };
    for (let index = 0; index < 253; index++) entity[`p${index}`] = 1;
    assert.throws(() => assertEntityFits(entity, 'Wide'), /253 properties/);
    delete entity['p252'];
    assert.doesNotThrow(() => assertEntityFits(entity, 'Wide'));
  });

  test('a batch is limited to 100 operations and 4 MiB as sent (UTF-8 JSON, escapes included)', () => {
    const small = { partitionKey: 'p', rowKey: 'r' };
    assert.throws(
      () =>
        assertBatchFits(
          Array.from({ length: 101 }, () => small),
          'The turn',
        ),
      /101 operations/,
    );
    assert.doesNotThrow(() =>
      assertBatchFits(
        Array.from({ length: 100 }, () => small),
        'The turn',
      ),
    );
    // Control characters are escaped as \u00XX: 6 bytes each on the wire.
    const escaped = { partitionKey: 'p', rowKey: 'r', content: '\u0001'.repeat(400_000) };
    assert.ok(batchPayloadBytes([escaped]) > 2_400_000);
    assert.throws(
      () => assertBatchFits([escaped, { ...escaped, rowKey: 's' }], 'The turn'),
      /4194304-byte batch limit/,
    );
  });
});
