import { app, type InvocationContext } from '@azure/functions';
import * as z from 'zod';
import { getServices } from '../composition';
import { TURN_QUEUE } from '../adapters/storageTurnQueue';
import type { TurnJobMessage } from '../core/ports';

const reference = {
  owner: z.object({ id: z.string().min(1), kind: z.enum(['user', 'integration', 'local']) }),
  conversationId: z.string().min(1),
  turnId: z.string().min(1),
};
const messageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('turn'), ...reference }),
  z.object({ type: z.literal('delivery'), ...reference, attempt: z.number().int().min(1) }),
]);

/**
 * Queue trigger on `turn-jobs` (connection AzureWebJobsStorage): runs a queued turn, or one more delivery attempt of
 * its outcome. A thrown error leaves the message to the host: visible again after host.json's visibilityTimeout,
 * and in `turn-jobs-poison` after maxDequeueCount runs.
 */
export async function runTurnJob(message: unknown, context: InvocationContext): Promise<void> {
  const parsed = messageSchema.safeParse(message);
  if (!parsed.success) throw new Error(`Not a turn job message: ${parsed.error.issues[0]?.message ?? 'unknown'}`);
  const job: TurnJobMessage = parsed.data;
  const services = await getServices();
  if (!services.jobs) throw new Error('Turn jobs need the queue connection AzureWebJobsStorage.');
  const dequeueCount = Number(context.triggerMetadata?.dequeueCount ?? 1);
  context.log(`${job.type} ${job.turnId} (dequeue ${dequeueCount})`);
  const jobs = services.jobs;
  // Inside the host's trace for this invocation, like the HTTP functions (one trace per queued turn).
  await services.inInvocationContext(context.traceContext, () =>
    job.type === 'turn' ? jobs.run(job, dequeueCount) : jobs.deliver(job),
  );
}

app.storageQueue('runTurnJob', {
  queueName: TURN_QUEUE,
  connection: 'AzureWebJobsStorage',
  handler: runTurnJob,
});
