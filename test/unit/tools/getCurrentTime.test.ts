import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidToolArgumentsError } from '../../../src/core/tools';
import { createGetCurrentTime, localTime } from '../../../src/tools/getCurrentTime';

const caller = { id: 'alice', kind: 'user' as const };
const signal = new AbortController().signal;

describe('get_current_time', () => {
  it('answers the local date and time with the offset, across a daylight-saving change', () => {
    // Europe/Berlin moved from +01:00 to +02:00 at 01:00 UTC on 29 March 2026.
    assert.deepEqual(localTime(new Date('2026-03-29T00:30:00Z'), 'Europe/Berlin'), {
      timeZone: 'Europe/Berlin',
      localDateTime: '2026-03-29T01:30:00',
      utcOffset: '+01:00',
      weekday: 'Sunday',
      utc: '2026-03-29T00:30:00.000Z',
    });
    assert.equal(localTime(new Date('2026-03-29T01:30:00Z'), 'Europe/Berlin').localDateTime, '2026-03-29T03:30:00');
    assert.equal(localTime(new Date('2026-03-29T01:30:00Z'), 'Europe/Berlin').utcOffset, '+02:00');
    const kolkata = localTime(new Date('2026-11-28T23:45:00Z'), 'Asia/Kolkata');
    assert.equal(kolkata.localDateTime, '2026-11-29T05:15:00');
    assert.equal(kolkata.utcOffset, '+05:30');
    assert.equal(localTime(new Date('2026-11-28T23:45:00Z'), 'UTC').utcOffset, '+00:00');
    assert.equal(localTime(new Date('2026-01-01T00:00:00Z'), 'America/St_Johns').utcOffset, '-03:30');
  });

  it('describes itself with a JSON Schema from zod, and validates every call', async () => {
    const tool = createGetCurrentTime({ now: () => new Date('2026-06-01T12:00:00Z') });
    assert.equal(tool.name, 'get_current_time');
    assert.deepEqual(tool.parameters['required'], ['timeZone']);
    assert.equal((tool.parameters['properties'] as Record<string, { type: string }>)['timeZone']?.type, 'string');
    assert.equal(tool.parameters['$schema'], undefined);
    const answer = (await tool.invoke({ timeZone: 'Asia/Tokyo' }, { caller, signal })) as { localDateTime: string };
    assert.equal(answer.localDateTime, '2026-06-01T21:00:00');
    for (const bad of [{}, { timeZone: 'Mars/Olympus' }, { timeZone: 42 }, { timeZone: '' }, null, 'Europe/Paris']) {
      await assert.rejects(tool.invoke(bad, { caller, signal }), InvalidToolArgumentsError, JSON.stringify(bad));
    }
  });
});
