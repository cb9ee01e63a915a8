/** Request bodies, as zod schemas built from the configured limits. Unknown fields are refused. */
import * as z from 'zod';
import { isStorableText, STORABLE_TEXT_RULE } from '../core/text';
import { clientToolProblem } from './clientToolSchema';
import { MAX_JSON_DEPTH, nestsDeeperThan, unstorableStringAt } from './jsonValues';

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

/** OpenAI accepts at most 128 tools per request; server and client tools share that. */
export const MAX_CLIENT_TOOLS = 64;
export const MAX_CONVERSATION_TOOLS = 64;
export { MAX_CLIENT_TOOL_JSON_CHARS } from './clientToolSchema';
export const MAX_TOOL_RESULTS = 128;
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const clientToolSchema = z
  .strictObject({
    name: z.string({ message: 'name must be a string' }).regex(TOOL_NAME, 'name is 1 to 64 letters, digits, _ or -'),
    description: storableString('description').min(1).max(1024),
    parameters: z.record(z.string(), z.unknown(), { message: 'parameters must be a JSON Schema object' }),
  })
  .superRefine((tool, ctx) => {
    const problem = clientToolProblem(tool);
    if (problem) ctx.addIssue({ code: 'custom', path: problem.path, message: problem.message });
  });

/**
 * A client tool's output: a string is sent as is, any other JSON as its JSON text. Its strings (and keys) must be
 * storable like every other client text, and it nests at most MAX_JSON_DEPTH levels (deeper JSON would not survive
 * JSON.stringify).
 */
function toolOutput(maxChars: number) {
  return z
    .unknown()
    .transform((value, ctx) => {
      const fail = (message: string) => {
        ctx.addIssue({ code: 'custom', message });
        return z.NEVER;
      };
      if (value === undefined) return fail('output is required');
      if (typeof value === 'string') return isStorableText(value) ? value : fail(`output ${STORABLE_TEXT_RULE}`);
      if (nestsDeeperThan(value, MAX_JSON_DEPTH))
        return fail(`output is nested more than ${MAX_JSON_DEPTH} levels deep`);
      const unstorable = unstorableStringAt(value);
      if (unstorable !== undefined) return fail(`output strings ${STORABLE_TEXT_RULE} (at ${unstorable})`);
      return JSON.stringify(value);
    })
    .pipe(z.string().max(maxChars, `output is longer than ${maxChars} characters`));
}

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
    tools: z
      .array(z.string({ message: 'tool names are strings' }).regex(TOOL_NAME, 'a tool name'), {
        message: 'tools must be an array of tool names',
      })
      .max(MAX_CONVERSATION_TOOLS)
      .optional(),
    clientTools: z
      .array(clientToolSchema, { message: 'clientTools must be an array' })
      .max(MAX_CLIENT_TOOLS, `at most ${MAX_CLIENT_TOOLS} client tools`)
      .optional(),
  });
}

export function toolResultsSchema(limits: BodyLimits) {
  return z.strictObject({
    turnId: storableString('turnId').min(1).max(128).optional(),
    results: z
      .array(
        z.strictObject({
          toolCallId: storableString('toolCallId').min(1).max(256),
          output: toolOutput(limits.maxMessageChars),
        }),
        { message: 'results must be an array' },
      )
      .min(1, 'results must not be empty')
      .max(MAX_TOOL_RESULTS),
  });
}

export { text as textField };

export function sendMessageSchema(limits: BodyLimits) {
  return z.strictObject({
    content: text('content', limits.maxMessageChars),
    name: z.string({ message: 'name must be a string' }).regex(NAME_PATTERN, NAME_RULE).optional(),
  });
}
