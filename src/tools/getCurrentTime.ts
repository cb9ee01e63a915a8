/**
 * `get_current_time`: the local date and time in an IANA time zone (e.g. `Europe/Paris`), with its UTC offset and
 * whether daylight saving applies is left to the offset. Reads only the clock.
 */
import * as z from 'zod';
import type { Clock } from '../core/ports';
import { defineTool } from './defineTool';

export const GET_CURRENT_TIME = 'get_current_time';

/** True when the runtime's ICU knows the zone (IANA names and their aliases). */
function isTimeZone(value: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: value });
    return true;
  } catch {
    return false;
  }
}

const parameters = z.object({
  timeZone: z
    .string()
    .min(1)
    .max(64)
    .refine(isTimeZone, { message: 'not an IANA time zone name (such as Europe/Paris or America/New_York)' })
    .describe('IANA time zone name, e.g. Europe/Paris, America/New_York, Asia/Tokyo, UTC'),
});

export interface CurrentTime {
  timeZone: string;
  /** Local date and time, ISO 8601 without offset: `2026-11-28T10:07:05`. */
  localDateTime: string;
  /** The zone's offset from UTC at that instant: `+01:00`. */
  utcOffset: string;
  weekday: string;
  utc: string;
}

export function localTime(now: Date, timeZone: string): CurrentTime {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
      weekday: 'long',
      timeZoneName: 'longOffset',
    })
      .formatToParts(now)
      .map((part) => [part.type, part.value]),
  );
  // `GMT+01:00`, or just `GMT` at offset zero.
  const offset = /^GMT([+-]\d{2}:\d{2})?$/.exec(parts['timeZoneName'] ?? '')?.[1] ?? '+00:00';
  return {
    timeZone,
    localDateTime: `${parts['year']}-${parts['month']}-${parts['day']}T${parts['hour']}:${parts['minute']}:${parts['second']}`,
    utcOffset: offset,
    weekday: parts['weekday'] ?? '',
    utc: now.toISOString(),
  };
}

export function createGetCurrentTime(clock: Clock) {
  return defineTool({
    name: GET_CURRENT_TIME,
    description: 'Get the current local date and time in a time zone.',
    parameters,
    handler: async ({ timeZone }) => localTime(clock.now(), timeZone),
  });
}
