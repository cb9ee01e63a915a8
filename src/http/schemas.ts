/** Request bodies, as zod schemas built from the configured limits. Unknown fields are refused. */
import { z } from 'zod';
import { isStorableText, STORABLE_TEXT_RULE } from '../core/text';

export interface BodyLimits {
  maxMessageChars: number;
  maxExamples: number;
}

/** Text limits are in UTF-16 code units, the unit Table Storage counts (a string property holds 32,768 of them). */
export const MAX_TITLE_CHARS = 200;
export const MAX_METADATA_ENTRIES = 16;
export const MAX_METADATA_KEY_CHARS = 64;
export const MAX_METADATA_VALUE_CHARS = 512;
/** OpenAI's pattern for a participant's `name`. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const NAME_RULE = 'name is 1 to 64 ASCII letters, digits, _ or -';
export const METADATA_KEY_RULE = `metadata keys are 1 to ${MAX_METADATA_KEY_CHARS} ASCII letters, digits, _ . or -`;

/**
 * A string whose absence and wrong type get distinct messages (`content is required`, `content must be a string`).
 * Optional fields never see the first.
 */
export const requiredString = (field: string) =>
  z.string({
    error: (issue) => (issue.input === undefined ? `${field} is required` : `${field} must be a string`),
  });

/**
 * At most `maxUnits` UTF-16 code units. zod's `.max()` counts code points (an emoji is one), as JSON Schema's
 * `maxLength` does; the documented and stored unit is the UTF-16 code unit (an emoji is two). The schema still says
 * `maxLength: maxUnits`, a bound every accepted string meets.
 */
export function maxUtf16<S extends z.ZodString>(schema: S, field: string, maxUnits: number) {
  return schema
    .refine((value) => value.length <= maxUnits, {
      message: `${field} is longer than ${maxUnits} UTF-16 code units`,
      abort: true,
    })
    .meta({ maxLength: maxUnits });
}

/** Non-blank text of at most `maxUnits` UTF-16 code units, with one message per problem. */
const text = (field: string, maxUnits: number) =>
  requiredString(field)
    .check((ctx) => {
      if (ctx.value.trim() !== '') return;
      ctx.issues.push({
        code: 'custom',
        input: ctx.value,
        message: ctx.value === '' ? `${field} must not be empty` : `${field} must not be blank`,
        abort: true,
      });
    })
    .refine((value) => value.length <= maxUnits, { message: `${field} is longer than ${maxUnits} UTF-16 code units` })
    .refine(isStorableText, `${field} ${STORABLE_TEXT_RULE}`)
    .meta({ minLength: 1, maxLength: maxUnits });

/** A string that is stored or hashed: well-formed Unicode without NUL (see core/text.ts). */
export const storableString = (field: string) =>
  z.string({ message: `${field} must be a string` }).refine(isStorableText, `${field} ${STORABLE_TEXT_RULE}`);

export function createConversationSchema(limits: BodyLimits) {
  return z.strictObject({
    system: text('system', limits.maxMessageChars).optional(),
    examples: z
      .array(
        z.strictObject({
          role: z.enum(['user', 'assistant'], { message: 'role must be "user" or "assistant"' }),
          content: text('content', limits.maxMessageChars),
        }),
        { message: 'examples must be an array' },
      )
      .max(limits.maxExamples, `at most ${limits.maxExamples} examples`)
      .optional(),
    title: text('title', MAX_TITLE_CHARS).optional(),
    metadata: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, METADATA_KEY_RULE),
        maxUtf16(
          z.string({ message: 'metadata values must be strings' }),
          'a metadata value',
          MAX_METADATA_VALUE_CHARS,
        ).refine(isStorableText, `metadata values ${STORABLE_TEXT_RULE}`),
      )
      .refine(
        (value) => Object.keys(value).length <= MAX_METADATA_ENTRIES,
        `at most ${MAX_METADATA_ENTRIES} metadata entries`,
      )
      .optional(),
  });
}

export { text as textField };

export function sendMessageSchema(limits: BodyLimits) {
  return z.strictObject({
    content: text('content', limits.maxMessageChars),
    name: z.string({ message: 'name must be a string' }).regex(NAME_PATTERN, NAME_RULE).optional(),
  });
}
