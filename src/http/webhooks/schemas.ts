/** Bodies of the webhook routes, as zod schemas built from the configured limits. */
import * as z from 'zod';
import type { BodyLimits } from '../schemas';
import { maxUtf16, NAME_PATTERN, NAME_RULE, requiredString, storableString, textField } from '../schemas';
import { isStorableText, STORABLE_TEXT_RULE } from '../../core/text';
import { MAX_THREAD_ID_CHARS } from './threadTurn';

// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** POST /api/webhooks/messages: unknown fields are refused, as on every other route. */
export function webhookMessageSchema(limits: Pick<BodyLimits, 'maxMessageChars'>) {
  return z.strictObject({
    threadId: maxUtf16(requiredString('threadId').min(1, 'threadId must not be empty'), 'threadId', MAX_THREAD_ID_CHARS)
      .refine((value) => !CONTROL_CHARACTERS.test(value), 'threadId must not contain control characters')
      // Hashed into the conversation id: an unpaired surrogate would hash like U+FFFD and merge two threads.
      .refine(isStorableText, `threadId ${STORABLE_TEXT_RULE}`),
    content: textField('content', limits.maxMessageChars),
    user: maxUtf16(storableString('user').min(1, 'user must not be empty'), 'user', 256).optional(),
    name: z.string({ message: 'name must be a string' }).regex(NAME_PATTERN, NAME_RULE).optional(),
  });
}

/**
 * The part of a GitHub issues / issue_comment payload we use; GitHub sends much more, which is ignored. What becomes
 * a key, a hash or stored text must be well-formed Unicode without NUL (see core/text.ts); the rest is not checked.
 */
export const githubIssuePayloadSchema = z.object({
  action: z.string(),
  repository: z.object({ full_name: storableString('repository/full_name').min(1).max(200) }),
  /** Present when the delivery comes through a GitHub App: replies are posted as that installation. */
  installation: z.object({ id: z.number().int().positive() }).optional(),
  issue: z.object({
    number: z.number().int().positive(),
    title: storableString('issue/title'),
    body: storableString('issue/body').nullable().optional(),
    user: z.object({ login: z.string(), type: z.string().optional() }).optional(),
  }),
  comment: z
    .object({
      body: storableString('comment/body').nullable().optional(),
      user: z.object({ login: z.string(), type: z.string().optional() }).optional(),
      performed_via_github_app: z.object({ id: z.number() }).nullable().optional(),
    })
    .optional(),
});
