/** Bodies of the webhook routes, as zod schemas built from the configured limits. */
import { z } from 'zod';
import type { BodyLimits } from '../schemas';
import { NAME_PATTERN } from '../schemas';
import { MAX_THREAD_ID_CHARS } from './threadTurn';

// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** POST /api/webhooks/messages: unknown fields are refused, as on every other route. */
export function webhookMessageSchema(limits: Pick<BodyLimits, 'maxMessageChars'>) {
  return z.strictObject({
    threadId: z
      .string({ message: 'threadId must be a string' })
      .min(1, 'threadId must not be empty')
      .max(MAX_THREAD_ID_CHARS, `threadId is longer than ${MAX_THREAD_ID_CHARS} characters`)
      .refine((value) => !CONTROL_CHARACTERS.test(value), 'threadId must not contain control characters'),
    content: z
      .string({ message: 'content must be a string' })
      .min(1, 'content must not be empty')
      .max(limits.maxMessageChars, `content is longer than ${limits.maxMessageChars} characters`)
      .refine((value) => value.trim().length > 0, 'content must not be blank'),
    user: z
      .string({ message: 'user must be a string' })
      .min(1, 'user must not be empty')
      .max(256, 'user is longer than 256 characters')
      .optional(),
    name: z
      .string({ message: 'name must be a string' })
      .regex(NAME_PATTERN, 'name is 1 to 64 letters, digits, _ or -')
      .optional(),
  });
}

/** The part of a GitHub issues / issue_comment payload we use; GitHub sends much more, which is ignored. */
export const githubIssuePayloadSchema = z.object({
  action: z.string(),
  repository: z.object({ full_name: z.string().min(1).max(200) }),
  /** Present when the delivery comes through a GitHub App: replies are posted as that installation. */
  installation: z.object({ id: z.number().int().positive() }).optional(),
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
      performed_via_github_app: z.object({ id: z.number() }).nullable().optional(),
    })
    .optional(),
});
