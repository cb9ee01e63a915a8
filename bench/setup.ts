/**
 * Starts what every measurement shares: a private in-memory Azurite, the model stand-in (zero delay, a fixed
 * reply) and the real app served by the local host over HTTP in this process (AUTH_MODE=none, limits off), plus
 * the deterministic history, its token budget, and direct Table access in the store's format.
 */
import { readLongText } from '../src/adapters/splitText';
import { createTableConversationStore, type TableConversationStore } from '../src/adapters/tableConversationStore';
import { getTokenizer, type TiktokenTokenizer } from '../src/adapters/tiktokenTokenizer';
import { countMessageTokens } from '../src/core/tokens/countTokens';
import type { EncodingName, PrologueMessage } from '../src/core/ports';
import { LOCAL_CALLER } from '../src/http/caller';
import * as path from 'node:path';
import { LOCAL_APP_MODEL_KEY, REPO_ROOT, startLocalApp, type LocalApp } from '../local/app';
import { ConversationTables, type ConversationTemplate, type TurnMessages } from './conversationTables';
import { generateHistory, MODEL_REPLY, NEW_USER_MESSAGE, promptTokensOf, type HistoryMessage } from './history';
import { createConversation } from './turnClient';

/** gpt-4o: o200k_base, the encoding of every current model. */
export const BENCH_MODEL = 'gpt-4o';
export const BENCH_ENCODING: EncodingName = 'o200k_base';
/** The API key startLocalApp gives the app and the stand-in. */
export const STAND_IN_API_KEY = LOCAL_APP_MODEL_KEY;
export const SYSTEM_MESSAGE = 'You are a helpful assistant.';
const MAX_RESPONSE_TOKENS = 1024;
/** The largest history is trimmed to about this share of its tokens: a long conversation, where trimming works. */
const KEPT_SHARE_OF_LARGEST = 0.7;

/** App settings passed on to app processes started beside the in-process app. */
const APP_SETTING_NAMES = [
  'TABLES_CONNECTION_STRING',
  'TABLES_PREFIX',
  'AZURE_OPENAI_ENDPOINT',
  'AZURE_OPENAI_DEPLOYMENT',
  'AZURE_OPENAI_MODEL',
  'AZURE_OPENAI_TIMEOUT_MS',
  'AZURE_OPENAI_API_KEY',
  'AUTH_MODE',
  'LIMIT_REQUESTS_PER_MINUTE',
  'LIMIT_TOKENS_PER_DAY',
  'CHAT_TOKEN_LIMIT',
  'CHAT_MAX_RESPONSE_TOKENS',
  'CHAT_SYSTEM_MESSAGE',
];

export interface Budget {
  tokenLimit: number;
  maxResponseTokens: number;
}

export interface BenchSetup {
  app: LocalApp;
  /** True when running from dist/ (npm run bench); false under tsx. */
  compiled: boolean;
  tables: ConversationTables;
  /** The app's own store adapter on the same table, for timing the store without HTTP or the model. */
  store: TableConversationStore;
  tokenizer: TiktokenTokenizer;
  encoding: EncodingName;
  /** The largest history; smaller ones are its prefixes. */
  history: HistoryMessage[];
  /** The system message as the API stored it. */
  prologue: PrologueMessage[];
  /** The message every measured turn sends and the reply the stand-in gives, counted. */
  turn: TurnMessages;
  budget: Budget;
  /** The app's settings, for app processes started beside this one. */
  appEnv: Record<string, string>;
  template(size: number): ConversationTemplate;
  /** A conversation id not used before in this run. */
  newId(label: string): string;
  log(line: string): void;
  close(): Promise<void>;
}

export async function startBench(options: {
  largestHistory: number;
  log: (line: string) => void;
}): Promise<BenchSetup> {
  const compiled = __filename.endsWith('.js');
  const encoding = BENCH_ENCODING;
  // The app's own tokenizer (one per encoding per process): its stats count what the app encodes.
  const tokenizer = getTokenizer(encoding);
  const history = generateHistory(options.largestHistory, tokenizer);
  const system = { role: 'system' as const, content: SYSTEM_MESSAGE };
  const turn: TurnMessages = {
    user: {
      role: 'user',
      content: NEW_USER_MESSAGE,
      tokens: countMessageTokens({ role: 'user', content: NEW_USER_MESSAGE }, tokenizer),
    },
    reply: {
      role: 'assistant',
      content: MODEL_REPLY,
      tokens: countMessageTokens({ role: 'assistant', content: MODEL_REPLY }, tokenizer),
    },
  };
  const wholePrompt = promptTokensOf([{ tokens: countMessageTokens(system, tokenizer) }, ...history, turn.user]);
  const budget: Budget = {
    maxResponseTokens: MAX_RESPONSE_TOKENS,
    tokenLimit: MAX_RESPONSE_TOKENS + Math.round(wholePrompt * KEPT_SHARE_OF_LARGEST),
  };

  const app = await startLocalApp({
    compiled,
    env: {
      AZURE_OPENAI_MODEL: BENCH_MODEL,
      CHAT_SYSTEM_MESSAGE: SYSTEM_MESSAGE,
      CHAT_TOKEN_LIMIT: String(budget.tokenLimit),
      CHAT_MAX_RESPONSE_TOKENS: String(budget.maxResponseTokens),
    },
    model: { reply: () => MODEL_REPLY },
    // The bound function (bench/boundFunction.ts) in the same host, compiled or not like the app.
    extraFunctionModules: [
      compiled
        ? path.join(REPO_ROOT, 'dist', 'bench', 'boundFunction.js')
        : path.join(REPO_ROOT, 'bench', 'boundFunction.ts'),
    ],
  });
  try {
    const tables = new ConversationTables(
      app.azurite.connectionString,
      `${process.env.TABLES_PREFIX}conversations`,
      LOCAL_CALLER,
    );
    const store = await createTableConversationStore({
      connectionString: app.azurite.connectionString,
      tablePrefix: process.env.TABLES_PREFIX ?? '',
    });
    // One conversation created through the API gives the header every copy reuses.
    const headerSource = await createConversation(app.api, { title: 'benchmark' });
    const header = await tables.readHeader(headerSource);
    const prologue = JSON.parse(readLongText(header, 'prologue') ?? '[]') as PrologueMessage[];
    const appEnv: Record<string, string> = {};
    for (const name of APP_SETTING_NAMES) {
      const value = process.env[name];
      if (value !== undefined) appEnv[name] = value;
    }
    let counter = 0;
    const runId = Date.now().toString(36);
    return {
      app,
      compiled,
      tables,
      store,
      tokenizer,
      encoding,
      history,
      prologue,
      turn,
      budget,
      appEnv,
      template: (size) => {
        if (size > history.length) throw new Error(`No history of ${size} messages was generated.`);
        return { header, messages: history.slice(0, size), encoding };
      },
      newId: (label) => `bench-${runId}-${label}-${++counter}`,
      log: options.log,
      close: () => app.close(),
    };
  } catch (error) {
    await app.close();
    throw error;
  }
}
