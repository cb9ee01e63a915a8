import { app } from '@azure/functions';
import { InvalidRequestError, NotFoundError } from '../core/errors';
import { withServices } from '../http/handler';
import { json, parseJsonBytes, readBodyBytes } from '../http/request';
import { verifyGithubSignature } from '../http/webhooks/githubSignature';
import { githubIssuePayloadSchema } from '../http/webhooks/schemas';
import { acceptedTurn } from '../http/turns/queuedTurns';
import { GITHUB_CALLER, participantName, queueThreadTurn, runThreadTurn } from '../http/webhooks/threadTurn';

const DELIVERY_ID = /^[\x21-\x7e]{1,255}$/;

/**
 * POST /api/webhooks/github: a GitHub webhook (content type application/json) signed with X-Hub-Signature-256.
 * A new issue or a new issue comment becomes a turn in the conversation of `owner/repo#number`. With a GitHub App
 * configured (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY) the delivery is answered 202 at once and the reply is posted
 * as a comment on the issue; otherwise it comes back in the response. A redelivery keeps X-GitHub-Delivery and is answered from the stored turn. `ping` answers
 * 200; other events, other actions and comments written by bots are acknowledged with 202 and ignored.
 */
export const webhookGithub = withServices(async (request, _context, services) => {
  const secret = services.config.webhooks.githubSecret;
  if (!secret)
    throw new NotFoundError('GitHub deliveries are not enabled on this app (GITHUB_WEBHOOK_SECRET is not set).');
  const bytes = await readBodyBytes(request, services.config.limits.bodyBytes);
  verifyGithubSignature({ header: request.headers.get('x-hub-signature-256'), body: bytes, secrets: [secret] });

  const event = request.headers.get('x-github-event') ?? '';
  if (event === 'ping') return json(200, { status: 'pong' });
  if (event !== 'issues' && event !== 'issue_comment') return ignored(`event ${event || '(none)'} is not handled`);

  const deliveryId = request.headers.get('x-github-delivery');
  if (!deliveryId || !DELIVERY_ID.test(deliveryId)) {
    throw new InvalidRequestError('GitHub deliveries must carry X-GitHub-Delivery.', [
      { field: 'X-GitHub-Delivery', message: 'expected the delivery GUID' },
    ]);
  }
  const payload = parseJsonBytes(request, bytes, githubIssuePayloadSchema);
  const appId = services.config.webhooks.githubApp?.appId;
  const message = event === 'issues' ? fromIssue(payload) : fromComment(payload, appId);
  if ('ignore' in message) return ignored(message.ignore);
  if (message.content.length > services.config.chat.maxMessageChars) {
    throw new InvalidRequestError(
      `The ${event} text is longer than ${services.config.chat.maxMessageChars} characters.`,
      [{ field: event === 'issues' ? 'issue/body' : 'comment/body', message: 'too long' }],
    );
  }

  const thread = {
    principal: GITHUB_CALLER,
    source: 'github' as const,
    threadId: `${payload.repository.full_name}#${payload.issue.number}`,
    title: `${payload.repository.full_name}#${payload.issue.number}: ${payload.issue.title}`,
    content: message.content,
    ...(message.name ? { name: message.name } : {}),
    deliveryId,
  };
  if (services.config.webhooks.githubApp && services.jobs) {
    // Acknowledged at once (GitHub waits 10 s); the reply is posted as an issue comment by the app's installation.
    if (!payload.installation) return ignored('the delivery names no GitHub App installation to reply as');
    const job = await queueThreadTurn(services, services.jobs, {
      ...thread,
      reply: {
        kind: 'github',
        installationId: payload.installation.id,
        repository: payload.repository.full_name,
        issueNumber: payload.issue.number,
      },
    });
    return acceptedTurn(job);
  }
  const { body, replayed } = await runThreadTurn(services, thread);
  return json(200, body, replayed ? { 'Idempotent-Replayed': 'true' } : {});
});

type Payload = ReturnType<typeof githubIssuePayloadSchema.parse>;
type Message = { content: string; name?: string } | { ignore: string };

function fromIssue(payload: Payload): Message {
  if (payload.action !== 'opened') return { ignore: `issues action ${payload.action} is not handled` };
  const content = `${payload.issue.title}\n\n${payload.issue.body ?? ''}`.trim();
  return withAuthor(content, payload.issue.user);
}

function fromComment(payload: Payload, appId: string | undefined): Message {
  if (payload.action !== 'created') return { ignore: `issue_comment action ${payload.action} is not handled` };
  if (!payload.comment) return { ignore: 'the delivery has no comment' };
  // Our own replies come back as issue_comment deliveries: never answer them.
  if (appId && String(payload.comment.performed_via_github_app?.id ?? '') === appId) {
    return { ignore: 'comments posted by this app are not answered' };
  }
  // Comments by bots (including any that would post our replies back) would start a conversation with ourselves.
  if (payload.comment.user?.type === 'Bot') return { ignore: 'comments written by bots are not answered' };
  return withAuthor((payload.comment.body ?? '').trim(), payload.comment.user);
}

function withAuthor(content: string, user: { login: string } | undefined): Message {
  if (content === '') return { ignore: 'the text is empty' };
  const name = participantName(user?.login);
  return { content, ...(name ? { name } : {}) };
}

function ignored(reason: string) {
  return json(202, { status: 'ignored', reason });
}

app.http('webhookGithub', {
  route: 'webhooks/github',
  methods: ['POST'],
  authLevel: 'anonymous',
  handler: webhookGithub,
});
