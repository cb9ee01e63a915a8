/**
 * The bound function: what a turn is measured against (issue 12, "Restated turn targets"). A minimal function
 * registered in the same host as the app, doing only what any chat backend on this storage layout must: parse the
 * JSON body, make the storage floor's calls (one query of the conversation's partition, one entity-group transaction
 * of the same entities as a turn: the user message, the reply, the header merged on the ETag just read, see
 * ConversationTables), call the model stand-in once through the same SDK (`openai`, on the v1 path the app uses), and
 * answer JSON. No caller resolution, no validation beyond the body's shape, no token counting, no trimming, no cache.
 *
 * It reads the app's own settings (the host's environment) and is served only where the benchmark adds it to the
 * host's function modules (bench/setup.ts in process, bench/hostEntry.ts in an app process). Route:
 * `POST /api/bench/bound/{conversationId}` with `{ "content": "..." }`.
 */
import { app, type HttpRequest, type HttpResponseInit } from '@azure/functions';
import OpenAI from 'openai';
import { readLongText } from '../src/adapters/splitText';
import { HEADER_ROW } from '../src/adapters/tableKeys';
import type { EncodingName } from '../src/core/ports';
import { LOCAL_CALLER } from '../src/http/caller';
import { ConversationTables } from './conversationTables';

export const BOUND_ROUTE = 'bench/bound/{conversationId}';
/** What the stand-in's usage is stored under; the bound function counts nothing itself. */
const ENCODING: EncodingName = 'o200k_base';
const DEFAULT_MAX_TOKENS = 1024;

interface BoundClients {
  tables: ConversationTables;
  model: OpenAI;
  deployment: string;
  maxTokens: number;
}

let clients: BoundClients | undefined;

function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`The bound function needs the setting ${name}.`);
  return value;
}

/** Built on first use, once per process, like the app's clients. */
function boundClients(): BoundClients {
  clients ??= {
    tables: new ConversationTables(
      setting('TABLES_CONNECTION_STRING'),
      `${process.env['TABLES_PREFIX'] ?? ''}conversations`,
      LOCAL_CALLER,
    ),
    model: new OpenAI({
      baseURL: `${setting('AZURE_OPENAI_ENDPOINT').replace(/\/+$/, '')}/openai/v1/`,
      apiKey: setting('AZURE_OPENAI_API_KEY'),
    }),
    deployment: setting('AZURE_OPENAI_DEPLOYMENT'),
    maxTokens: Number(process.env['CHAT_MAX_RESPONSE_TOKENS'] ?? DEFAULT_MAX_TOKENS),
  };
  return clients;
}

type ModelMessage = { role: 'system' | 'user' | 'assistant'; content: string };

export async function boundTurn(request: HttpRequest): Promise<HttpResponseInit> {
  const body = (await request.json()) as { content?: unknown } | null;
  const conversationId = request.params['conversationId'];
  if (typeof body?.content !== 'string' || !conversationId) {
    return { status: 400, jsonBody: { error: 'POST {"content": "..."} to bench/bound/{conversationId}.' } };
  }
  const content = body.content;
  const { tables, model, deployment, maxTokens } = boundClients();

  const read = await tables.readPartition(conversationId);
  const messages: ModelMessage[] = [];
  for (const entity of read.entities) {
    if (entity.rowKey === HEADER_ROW) {
      const prologue = JSON.parse(readLongText(entity, 'prologue') ?? '[]') as ModelMessage[];
      messages.unshift(...prologue.map(({ role, content: text }) => ({ role, content: text })));
      continue;
    }
    const role = entity['role'];
    if (role === 'user' || role === 'assistant')
      messages.push({ role, content: readLongText(entity, 'content') ?? '' });
  }
  messages.push({ role: 'user', content });

  const completion = await model.chat.completions.create({ model: deployment, messages, max_tokens: maxTokens });
  const reply = completion.choices[0]?.message.content ?? '';
  await tables.commitTurn(
    conversationId,
    read,
    {
      user: { role: 'user', content, tokens: 0 },
      reply: { role: 'assistant', content: reply, tokens: completion.usage?.completion_tokens ?? 0 },
    },
    ENCODING,
  );
  return { status: 200, jsonBody: { message: { content: reply } } };
}

app.http('benchBound', {
  route: BOUND_ROUTE,
  methods: ['POST'],
  authLevel: 'anonymous',
  handler: boundTurn,
});
