/**
 * The integration's callback: a turn's outcome as an outbound Standard Webhooks delivery to WEBHOOK_CALLBACK_URL,
 * signed with WEBHOOK_CALLBACK_SECRET by the `standardwebhooks` package (the reference implementation, so what
 * receivers verify with is what signs). `webhook-id` is derived from the turn, so every retry of one event carries
 * the same id and the receiver can drop duplicates; `webhook-timestamp` is the attempt's time, as the spec wants.
 * Any answer but 2xx, a connection failure or a timeout is retryable (the core backs off through the queue).
 */
import type { Webhook } from 'standardwebhooks';
import type { DeliveryOutcome, ReplyEvent, ReplySender } from '../core/ports';
import { problemFromRecord } from '../http/problem';
import { completedTurnBody } from '../http/turns/turnBodies';

export interface WebhookCallbackOptions {
  url: string;
  /** whsec_... : the integration's outbound secret, never taken from a request. */
  secret: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
  now?: () => Date;
}

const DEFAULT_TIMEOUT_MS = 15_000;

export function callbackWebhookId(turnId: string): string {
  return `evt_${turnId}`;
}

export function callbackPayload(event: ReplyEvent, at: Date): Record<string, unknown> {
  const { job } = event;
  const threadId = job.reply.kind === 'webhook' ? job.reply.threadId : undefined;
  const common = { turnId: job.turnId, conversationId: job.conversationId, ...(threadId ? { threadId } : {}) };
  return {
    type: event.type,
    timestamp: at.toISOString(),
    data:
      event.type === 'turn.completed'
        ? { ...common, status: 'completed', ...completedTurnBody(event.record, event.reply) }
        : { ...common, status: 'failed', problem: problemFromRecord(event.failure) },
  };
}

export class WebhookCallbackSender implements ReplySender {
  private readonly signer: Webhook;

  constructor(private readonly options: WebhookCallbackOptions) {
    // Required here, not at load: only an app with WEBHOOK_CALLBACK_URL set makes a sender (scripts/bundle.ts lazy/).
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
    const { Webhook: Signer } = require('standardwebhooks') as typeof import('standardwebhooks');
    this.signer = new Signer(options.secret);
  }

  async deliver(event: ReplyEvent): Promise<DeliveryOutcome> {
    const at = (this.options.now ?? (() => new Date()))();
    const id = callbackWebhookId(event.job.turnId);
    const body = JSON.stringify(callbackPayload(event, at));
    try {
      const response = await (this.options.fetch ?? fetch)(this.options.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'webhook-id': id,
          'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
          'webhook-signature': this.signer.sign(id, at, body),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
      });
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 200 && response.status < 300) return { ok: true };
      return { ok: false, retryable: true, error: `the callback answered ${response.status}` };
    } catch (error) {
      const reason = error instanceof Error && error.name === 'TimeoutError' ? 'timed out' : 'could not be reached';
      return { ok: false, retryable: true, error: `the callback ${reason}` };
    }
  }
}
