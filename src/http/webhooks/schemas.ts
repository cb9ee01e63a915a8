/** Bodies of the webhook routes, as zod schemas built from the configured limits. */
import { z } from 'zod';
import type { BodyLimits } from '../schemas';
import { maxUtf16, NAME_PATTERN, NAME_RULE, requiredString, textField } from '../schemas';
import { MAX_THREAD_ID_CHARS } from './threadTurn';

// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** POST /api/webhooks/messages: unknown fields are refused, as on every other route. */
export function webhookMessageSchema(limits: Pick<BodyLimits, 'maxMessageChars'>) {
  return z.strictObject({
    threadId: maxUtf16(
      requiredString('threadId').min(1, 'threadId must not be empty'),
      'threadId',
      MAX_THREAD_ID_CHARS,
    ).refine((value) => !CONTROL_CHARACTERS.test(value), 'threadId must not contain control characters'),
    content: textField('content', limits.maxMessageChars),
    user: maxUtf16(
      z.string({ message: 'user must be a string' }).min(1, 'user must not be empty'),
      'user',
      256,
    ).optional(),
    name: z.string({ message: 'name must be a string' }).regex(NAME_PATTERN, NAME_RULE).optional(),
  });
}

/** The part of a GitHub issues / issue_comment payload we use; GitHub sends much more, which is ignored. */
export const githubIssuePayloadSchema = z.object({
  action: z.string(),
  repository: z.object({ full_name: z.string().min(1).max(200) }),
  issue: z.object({
    number: z.number().int().positive(),
    title: z.string(),
    body: z.string().nullable().optional(),
    user: z.object({ login: z.string(), type: z.string().optional() }).optional(),
  }),
  comment: z
    .object({
      body: z.string().nullable().optional(),
      user: z.object({ login: z.string(), type: z.string().optional() }).optional(),
    })
    .optional(),
});
