/**
 * TurnJobQueue on Azure Storage Queues (`@azure/storage-queue`), the queue the `runTurnJob` function is triggered
 * by. Messages are JSON, base64-encoded as the Functions host expects by default (host.json
 * `extensions.queues.messageEncoding`), and only refer to the job stored in Table Storage, so they stay far below the
 * 64 KiB message limit. The connection is the host's own `AzureWebJobsStorage`: a connection string locally
 * (Azurite), or on Azure `AzureWebJobsStorage__queueServiceUri` with the managed identity.
 *
 * `@azure/storage-queue` is required when the first message is sent, not when the app loads or its services are
 * made: on Azure `AzureWebJobsStorage` is always set, yet most turns never queue anything (the bundle keeps the
 * package in a file of its own, lazy/, see scripts/bundle.ts).
 */
import type { QueueClient, QueueServiceClient, StoragePipelineOptions } from '@azure/storage-queue';
import type { TokenCredential } from '@azure/identity';
import type { TurnJobMessage, TurnJobQueue } from '../core/ports';
import { guardStorage as guard } from './tableConversationStore';

/** The queue the turn jobs run from; the host moves messages it gives up on to `${TURN_QUEUE}-poison`. */
export const TURN_QUEUE = 'turn-jobs';
export const POISON_SUFFIX = '-poison';
/** A queue message is at most 64 KiB; with base64 that leaves 48 KiB of JSON. */
export const MAX_MESSAGE_JSON_BYTES = 48 * 1024;

export interface QueueConnection {
  connectionString?: string;
  /** `https://<account>.queue.core.windows.net`, with `credential`. */
  serviceUri?: string;
  credential?: TokenCredential;
}

export function createQueueServiceClient(connection: QueueConnection): QueueServiceClient {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
  const { QueueServiceClient } = require('@azure/storage-queue') as typeof import('@azure/storage-queue');
  const options: StoragePipelineOptions = {
    retryOptions: { maxTries: 4, tryTimeoutInMs: 10_000, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
  };
  if (connection.connectionString) return QueueServiceClient.fromConnectionString(connection.connectionString, options);
  if (connection.serviceUri && connection.credential) {
    return new QueueServiceClient(connection.serviceUri, connection.credential, options);
  }
  throw new Error('Storage Queues need a connection string, or a queue service URI and a credential.');
}

export function encodeMessage(message: unknown): string {
  const json = JSON.stringify(message);
  if (Buffer.byteLength(json, 'utf8') > MAX_MESSAGE_JSON_BYTES) {
    throw new Error(`A queue message of ${Buffer.byteLength(json, 'utf8')} bytes does not fit the 64 KiB limit.`);
  }
  return Buffer.from(json, 'utf8').toString('base64');
}

export class StorageTurnQueue implements TurnJobQueue {
  private clients: { queue: QueueClient; poison: QueueClient } | undefined;
  private ready: Promise<void> | undefined;

  /** `service` is called once, on the first send: it makes the client (see createQueueServiceClient). */
  constructor(
    private readonly service: () => QueueServiceClient,
    private readonly queueName = TURN_QUEUE,
  ) {}

  async send(message: TurnJobMessage, options: { delaySeconds?: number } = {}): Promise<void> {
    await guard(async () => {
      const { queue } = await this.ensureQueues();
      await queue.sendMessage(encodeMessage(message), {
        ...(options.delaySeconds ? { visibilityTimeout: Math.ceil(options.delaySeconds) } : {}),
      });
    });
  }

  async poison(message: TurnJobMessage, reason: string): Promise<void> {
    await guard(async () => {
      const { poison } = await this.ensureQueues();
      await poison.sendMessage(encodeMessage({ ...message, reason: reason.slice(0, 1000) }));
    });
  }

  /** Created once per process (the host does not create a trigger's queue; a missing one is not an error there). */
  private async ensureQueues(): Promise<{ queue: QueueClient; poison: QueueClient }> {
    if (!this.clients) {
      const service = this.service();
      this.clients = {
        queue: service.getQueueClient(this.queueName),
        poison: service.getQueueClient(`${this.queueName}${POISON_SUFFIX}`),
      };
    }
    const clients = this.clients;
    this.ready ??= Promise.all([clients.queue.createIfNotExists(), clients.poison.createIfNotExists()]).then(
      () => undefined,
      (error: unknown) => {
        this.ready = undefined;
        throw error;
      },
    );
    await this.ready;
    return clients;
  }
}
