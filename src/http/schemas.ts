/** Request bodies, as zod schemas built from the configured limits. Unknown fields are refused. */
import { z } from 'zod';
import { isStorableText, STORABLE_TEXT_RULE } from '../core/text';

export interface BodyLimits {
  maxMessageChars: number;
  maxExamples: number;
}

export const MAX_TITLE_CHARS = 200;
export const MAX_METADATA_ENTRIES = 16;
export const MAX_METADATA_KEY_CHARS = 64;
export const MAX_METADATA_VALUE_CHARS = 512;
/** OpenAI's pattern for a participant's `name`. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

const text = (field: string, maxChars: number) =>
  z
    .string({ message: `${field} must be a string` })
    .min(1, `${field} must not be empty`)
    .max(maxChars, `${field} is longer than ${maxChars} characters`)
    .refine((value) => value.trim().length > 0, `${field} must not be blank`)
    .refine(isStorableText, `${field} ${STORABLE_TEXT_RULE}`);

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
        z
          .string()
          .regex(/^[A-Za-z0-9_.-]{1,64}$/, `metadata keys are 1 to ${MAX_METADATA_KEY_CHARS} letters, digits, _ . -`),
        z
          .string({ message: 'metadata values must be strings' })
          .max(MAX_METADATA_VALUE_CHARS)
          .refine(isStorableText, `metadata values ${STORABLE_TEXT_RULE}`),
      )
      .refine(
        (value) => Object.keys(value).length <= MAX_METADATA_ENTRIES,
        `at most ${MAX_METADATA_ENTRIES} metadata entries`,
      )
      .optional(),
  });
}

export function sendMessageSchema(limits: BodyLimits) {
  return z.strictObject({
    content: text('content', limits.maxMessageChars),
    name: z
      .string({ message: 'name must be a string' })
      .regex(NAME_PATTERN, 'name is 1 to 64 letters, digits, _ or -')
      .optional(),
  });
}
