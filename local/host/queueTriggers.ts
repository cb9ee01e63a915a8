/**
 * Storage-queue triggers (`app.storageQueue`), run the way the Functions host's queue listener runs them
 * (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#host-json):
 * - polls each trigger's queue, at once again after a message, backing off exponentially (from 100 ms, doubling)
 *   up to host.json `extensions.queues.maxPollingInterval` (default 1 minute) while it is empty; a queue that does
 *   not exist yet counts as empty;
 * - takes up to `batchSize` (16) messages at a time, in parallel, and fetches more once fewer than
 *   `newBatchThreshold` (batchSize / 2) run;
 * - hides each message while its function runs (a lease renewed at half its length, as the host renews its own), so
 *   a message is redelivered only when its worker died: then it reappears after the lease, with a higher dequeue
 *   count. The lease is 10 minutes as on Azure; `LOCAL_QUEUE_LEASE_SECONDS` shortens it for tests of a crash;
 * - decodes the message as `messageEncoding` says (base64 by default), passes it as the worker would (JSON parsed
 *   when it parses) with trigger metadata (dequeueCount, id, insertionTime, expirationTime, nextVisibleTime,
 *   popReceipt), through the same hooks as an HTTP invocation;
 * - deletes the message when the function succeeds; when it throws, makes the message visible again after
 *   `visibilityTimeout` (default 0), or, at the `maxDequeueCount`-th (5th) dequeue, moves it to `<queue>-poison`.
 * The connection named by the binding is read like the host reads it: the setting of that name holds a connection
 * string (`UseDevelopmentStorage=true` is Azurite on 10001), or `<name>__queueServiceUri` an endpoint used with the
 * DefaultAzureCredential.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { format } from 'node:util';
import { InvocationContext } from '@azure/functions';
import type { QueueClient, QueueServiceClient, DequeuedMessageItem } from '@azure/storage-queue';
import type { CoreFunctionMetadata, FunctionRegistration } from './functionsCore';
import { describeError, effectiveOptionsOf, runInvocation, userLog, type HostContext } from './serving';

export interface QueueSettings {
  batchSize: number;
  newBatchThreshold: number;
  maxPollingIntervalMs: number;
  visibilityTimeoutMs: number;
  maxDequeueCount: number;
  messageEncoding: 'base64' | 'none';
}

export const DEFAULT_QUEUE_SETTINGS: QueueSettings = {
  batchSize: 16,
  newBatchThreshold: 8,
  maxPollingIntervalMs: 60_000,
  visibilityTimeoutMs: 0,
  maxDequeueCount: 5,
  messageEncoding: 'base64',
};

const MIN_POLLING_INTERVAL_MS = 100;
const DEFAULT_LEASE_SECONDS = 600;

export interface QueueTrigger {
  functionName: string;
  queueName: string;
}

export interface RunningQueueTriggers {
  triggers: QueueTrigger[];
  /** Stops polling and waits for the invocations in flight. */
  close(): Promise<void>;
}

/** host.json `extensions.queues`, with the host's defaults for what it does not say. */
export function readQueueSettings(hostJsonPath: string): QueueSettings {
  let queues: Record<string, unknown> = {};
  try {
    const hostJson = JSON.parse(readFileSync(hostJsonPath, 'utf8')) as { extensions?: { queues?: unknown } };
    if (hostJson.extensions?.queues && typeof hostJson.extensions.queues === 'object') {
      queues = hostJson.extensions.queues as Record<string, unknown>;
    }
  } catch {
    // No host.json: the defaults.
  }
  const batchSize = integer(queues['batchSize'], DEFAULT_QUEUE_SETTINGS.batchSize, 'batchSize', 1, 32);
  return {
    batchSize,
    newBatchThreshold: integer(queues['newBatchThreshold'], Math.floor(batchSize / 2), 'newBatchThreshold', 0, 1000),
    maxPollingIntervalMs: timeSpanMs(queues['maxPollingInterval'], DEFAULT_QUEUE_SETTINGS.maxPollingIntervalMs),
    visibilityTimeoutMs: timeSpanMs(queues['visibilityTimeout'], DEFAULT_QUEUE_SETTINGS.visibilityTimeoutMs),
    maxDequeueCount: integer(queues['maxDequeueCount'], DEFAULT_QUEUE_SETTINGS.maxDequeueCount, 'maxDequeueCount', 1),
    messageEncoding: queues['messageEncoding'] === 'none' ? 'none' : 'base64',
  };
}

function integer(value: unknown, fallback: number, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new Error(`host.json extensions.queues.${name} must be a whole number from ${min} to ${max}.`);
  }
  return value;
}

/** A host.json time span: "hh:mm:ss[.fff]" or "d.hh:mm:ss"; a bare number is milliseconds. */
export function timeSpanMs(value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value === 'number' && value >= 0) return value;
  const match =
    typeof value === 'string' ? /^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$/.exec(value) : null;
  if (!match) throw new Error(`"${String(value)}" is not a time span like "00:00:30".`);
  const [, days = '0', hours = '0', minutes = '0', seconds = '0', fraction = ''] = match;
  return (
    ((Number(days) * 24 + Number(hours)) * 60 + Number(minutes)) * 60_000 +
    Number(seconds) * 1000 +
    Math.round(Number(`0.${fraction || '0'}`) * 1000)
  );
}

function queueTriggerOf(metadata: CoreFunctionMetadata) {
  return Object.values(metadata.bindings).find(
    (binding) => binding.direction === 'in' && binding.type?.toLowerCase() === 'queuetrigger',
  );
}

export function isQueueTrigger(registration: FunctionRegistration): boolean {
  return queueTriggerOf(registration.metadata) !== undefined;
}

/** `%NAME%` in a binding resolves to the app setting NAME, as in the host. */
function resolveSettings(text: string, env: NodeJS.ProcessEnv): string {
  return text.replace(/%([^%]+)%/g, (_whole, name: string) => {
    const value = env[name];
    if (value === undefined) throw new Error(`The binding refers to the setting ${name}, which is not set.`);
    return value;
  });
}

/*
 * The queue client is required when a queue trigger has a connection to poll, not when the host loads: a host
 * serving HTTP only (the benchmark's cold start, an app without AzureWebJobsStorage) never reads the package and the
 * several it pulls in (measured: ~160 ms of module loading on the 2-CPU machine).
 */
/* eslint-disable @typescript-eslint/no-require-imports -- lazy loading is the point here */
function queueServiceClient(): typeof QueueServiceClient {
  return (require('@azure/storage-queue') as typeof import('@azure/storage-queue')).QueueServiceClient;
}
/* eslint-enable @typescript-eslint/no-require-imports */

function serviceFor(connection: string, env: NodeJS.ProcessEnv): Promise<QueueServiceClient> {
  const connectionString = env[connection];
  if (connectionString) return Promise.resolve(queueServiceClient().fromConnectionString(connectionString));
  const serviceUri = env[`${connection}__queueServiceUri`];
  if (!serviceUri) {
    throw new Error(
      `The queue connection "${connection}" needs the setting ${connection} or ${connection}__queueServiceUri.`,
    );
  }
  return import('@azure/identity').then(({ DefaultAzureCredential }) => {
    const clientId = env[`${connection}__clientId`];
    const QueueServiceClient = queueServiceClient();
    return new QueueServiceClient(
      serviceUri,
      new DefaultAzureCredential(clientId ? { managedIdentityClientId: clientId } : {}),
    );
  });
}

export async function startQueueTriggers(
  host: HostContext,
  registrations: FunctionRegistration[],
  settings: QueueSettings,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RunningQueueTriggers> {
  const leaseSeconds = Number(env['LOCAL_QUEUE_LEASE_SECONDS'] || DEFAULT_LEASE_SECONDS);
  if (!Number.isInteger(leaseSeconds) || leaseSeconds < 1 || leaseSeconds > 7 * 24 * 3600) {
    throw new Error('LOCAL_QUEUE_LEASE_SECONDS must be a whole number of seconds from 1 to 604800.');
  }
  const pollers: QueuePoller[] = [];
  for (const registration of registrations) {
    const binding = queueTriggerOf(registration.metadata);
    if (!binding) continue;
    const queueName = resolveSettings(String(binding['queueName'] ?? ''), env).toLowerCase();
    let service: QueueServiceClient;
    try {
      service = await serviceFor(String(binding['connection'] || 'AzureWebJobsStorage'), env);
    } catch (error) {
      // As the host: the function is not started, the others are.
      host.logError(`Skipping "${registration.metadata.name}": ${(error as Error).message}`);
      continue;
    }
    pollers.push(new QueuePoller(host, registration, service, queueName, settings, leaseSeconds));
  }
  for (const poller of pollers) poller.start();
  return {
    triggers: pollers.map((poller) => ({ functionName: poller.functionName, queueName: poller.queueName })),
    close: async () => {
      await Promise.all(pollers.map((poller) => poller.stop()));
    },
  };
}

class QueuePoller {
  readonly functionName: string;
  private readonly queue: QueueClient;
  private readonly poisonQueue: QueueClient;
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly host: HostContext,
    private readonly registration: FunctionRegistration,
    service: QueueServiceClient,
    readonly queueName: string,
    private readonly settings: QueueSettings,
    private readonly leaseSeconds: number,
  ) {
    this.functionName = registration.metadata.name;
    this.queue = service.getQueueClient(queueName);
    this.poisonQueue = service.getQueueClient(`${queueName}-poison`);
  }

  start(): void {
    this.loop = this.poll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await Promise.all([...this.inFlight]);
  }

  private async poll(): Promise<void> {
    let interval = MIN_POLLING_INTERVAL_MS;
    while (!this.stopped) {
      let received: DequeuedMessageItem[] = [];
      if (this.inFlight.size <= this.settings.newBatchThreshold) {
        try {
          const room = this.settings.batchSize - this.inFlight.size;
          const answer = await this.queue.receiveMessages({
            numberOfMessages: Math.max(1, Math.min(32, room)),
            visibilityTimeout: this.leaseSeconds,
          });
          received = answer.receivedMessageItems;
        } catch (error) {
          if ((error as { statusCode?: number }).statusCode !== 404) {
            this.host.logError(
              `[${this.functionName}] could not read queue ${this.queueName}: ${describeError(error)}`,
            );
          }
        }
      }
      for (const message of received) {
        const running: Promise<void> = this.process(message).finally(() => {
          this.inFlight.delete(running);
          this.wake?.();
        });
        this.inFlight.add(running);
      }
      if (this.stopped) break;
      interval =
        received.length > 0 ? MIN_POLLING_INTERVAL_MS : Math.min(interval * 2, this.settings.maxPollingIntervalMs);
      if (received.length > 0 && this.inFlight.size <= this.settings.newBatchThreshold) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, received.length > 0 ? this.settings.maxPollingIntervalMs : interval);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private async process(message: DequeuedMessageItem): Promise<void> {
    let popReceipt = message.popReceipt;
    // Keeps the message hidden while the function runs, as the host does.
    const renewal = setInterval(
      () => {
        this.queue
          .updateMessage(message.messageId, popReceipt, undefined, this.leaseSeconds)
          .then((answer) => {
            if (answer.popReceipt) popReceipt = answer.popReceipt;
          })
          .catch((error: unknown) => {
            this.host.logError(
              `[${this.functionName}] could not renew message ${message.messageId}: ${describeError(error)}`,
            );
          });
      },
      (this.leaseSeconds * 1000) / 2,
    );
    let failure: unknown;
    try {
      await this.invoke(message);
    } catch (error) {
      failure = error ?? new Error('The function failed.');
    } finally {
      clearInterval(renewal);
    }
    try {
      if (failure === undefined) {
        await this.queue.deleteMessage(message.messageId, popReceipt);
      } else if (message.dequeueCount >= this.settings.maxDequeueCount) {
        this.host.logError(
          `[${this.functionName}] message ${message.messageId} failed ${message.dequeueCount} times: moved to ${this.queueName}-poison.`,
        );
        await this.poisonQueue.createIfNotExists();
        await this.poisonQueue.sendMessage(message.messageText);
        await this.queue.deleteMessage(message.messageId, popReceipt);
      } else {
        await this.queue.updateMessage(
          message.messageId,
          popReceipt,
          undefined,
          Math.ceil(this.settings.visibilityTimeoutMs / 1000),
        );
      }
    } catch (error) {
      this.host.logError(
        `[${this.functionName}] could not settle message ${message.messageId}: ${describeError(error)}`,
      );
    }
  }

  private async invoke(message: DequeuedMessageItem): Promise<void> {
    const { metadata, handler } = this.registration;
    const invocationId = randomUUID();
    const context: InvocationContext = new InvocationContext({
      invocationId,
      functionName: metadata.name,
      logHandler: (level, ...args) => userLog(this.host, context, level, format(...args)),
      options: effectiveOptionsOf(metadata),
      triggerMetadata: {
        dequeueCount: message.dequeueCount,
        id: message.messageId,
        insertionTime: message.insertedOn.toISOString(),
        expirationTime: message.expiresOn.toISOString(),
        nextVisibleTime: message.nextVisibleOn.toISOString(),
        popReceipt: message.popReceipt,
      },
    });
    const text =
      this.settings.messageEncoding === 'base64'
        ? Buffer.from(message.messageText, 'base64').toString('utf8')
        : message.messageText;
    const started = performance.now();
    try {
      await runInvocation(this.host, context, [tryJsonParse(text)], handler);
      this.host.log(
        `[${metadata.name}] queue ${this.queueName} message ${message.messageId} (dequeue ${message.dequeueCount}) done in ${Math.round(performance.now() - started)} ms`,
      );
    } catch (error) {
      this.host.logError(
        `[${metadata.name}] invocation ${invocationId} (message ${message.messageId}, dequeue ${message.dequeueCount}) failed: ${describeError(error)}`,
      );
      throw error;
    }
  }
}

/** As the worker converts a string input: JSON when it parses, the text otherwise. */
function tryJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
