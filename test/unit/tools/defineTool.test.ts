import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { isStorableText } from '../../../src/core/text';
import { defineTool } from '../../../src/tools/defineTool';

const context = { caller: { id: 'alice', kind: 'user' as const }, signal: new AbortController().signal };

describe('defineTool', () => {
  it('makes a string output storable: unpaired surrogates and NUL become U+FFFD', async () => {
    const tool = defineTool({
      name: 'echo',
      description: 'Echo.',
      parameters: z.object({ text: z.string() }),
      handler: async ({ text }) => text,
    });
    const output = await tool.invoke({ text: 'a\u0000b\ud800c\udfffd 😀' }, context);
    assert.equal(output, 'a\ufffdb\ufffdc\ufffdd 😀');
    assert.ok(isStorableText(output as string));
  });

  it('leaves a JSON output to be sent as JSON, whose text escapes them', async () => {
    const tool = defineTool({
      name: 'wrap',
      description: 'Wrap.',
      parameters: z.object({}),
      handler: async () => ({ text: 'a\u0000\ud800' }),
    });
    const output = await tool.invoke({}, context);
    assert.deepEqual(output, { text: 'a\u0000\ud800' });
    assert.ok(isStorableText(JSON.stringify(output)));
  });
});
