/**
 * What a long conversation costs under each trimming policy: one deterministic conversation run through the app
 * (an app process per policy, real HTTP, the shared Azurite) against a model stand-in that applies Azure OpenAI's
 * prompt-caching rule per `prompt_cache_key` (1,024 tokens at least, then 128-token steps; ../local/promptCache.ts).
 *
 * Billing assumption: cached prompt tokens cost half the price of uncached ones (the discount Azure OpenAI lists for
 * Standard deployments of the gpt-4o family; newer families discount more, which favours stable-prefix further).
 * Completion tokens are left out: the replies are the same under every policy. Summary calls are counted in full in
 * the summary run: their prompts in the billed prompt tokens, their completions as a figure of their own.
 */
import { performance } from 'node:perf_hooks';
import { startModelStandIn, type ModelStandIn, type ReplyRequest, type StandInMessage } from '../local/modelStandIn';
import { startChildApp, waitListening } from './childApp';
import type { BenchSetup } from './setup';
import type { Figure } from './stats';
import { createConversation } from './turnClient';

export interface CostOptions {
  turns: number;
  /** CHAT_HISTORY_TOKEN_LIMIT: the prompt budget, far below gpt-4o's 128,000-token window. */
  budget: number;
}

/** The price of a cached prompt token, as a share of an uncached one (the assumption stated above). */
export const CACHED_PRICE = 0.5;

/**
 * The policies compared at the same budget, and stable-prefix once more at the budget that keeps about as much
 * history on average as drop-oldest does (it holds between low water and the budget: 0.8 of it on average), so the
 * price of the same context is visible too.
 */
const POLICIES = [
  { label: 'drop_oldest', env: { CHAT_TRIM_POLICY: 'drop-oldest' }, budgetScale: 1 },
  { label: 'stable_prefix', env: { CHAT_TRIM_POLICY: 'stable-prefix' }, budgetScale: 1 },
  { label: 'stable_prefix_summary', env: { CHAT_TRIM_POLICY: 'stable-prefix', CHAT_SUMMARY: 'on' }, budgetScale: 1 },
  { label: 'stable_prefix_equal_history', env: { CHAT_TRIM_POLICY: 'stable-prefix' }, budgetScale: 1.25 },
] as const;

// ---- the deterministic conversation ------------------------------------------------------------------------------

/** About one o200k token each. */
const WORDS = (
  'time year people way day man thing woman life child world school state family student group country problem ' +
  'hand part place case week company system program question work government number night point home water room ' +
  'mother area money story fact month lot right study book eye job word business issue side kind head house ' +
  'service friend father power hour game line end member law car city community name president team minute idea ' +
  'kid body information back parent face others level office door health person art war history party result ' +
  'change morning reason research girl guy moment air teacher force education foot boy age policy music market ' +
  'sense nation plan college interest death experience effect use class control care field development role ' +
  'effort rate heart drug show leader light voice wife police mind price report decision son view relationship ' +
  'town road arm difference value building action model season society tax director position player record paper ' +
  'space ground form event official matter center couple site project activity star table need court oil ' +
  'situation cost industry figure street image phone data picture practice piece land product doctor wall patient'
).split(' ');

/** A small deterministic generator (mulberry32), so every run sends the same conversation. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function words(seed: number, min: number, max: number): string {
  const next = random(seed);
  const count = min + Math.floor(next() * (max - min + 1));
  return Array.from({ length: count }, () => WORDS[Math.floor(next() * WORDS.length)]!).join(' ');
}

/** About 1,300 tokens: a production-sized system message, long enough to be cached on its own. */
export const COST_SYSTEM_MESSAGE = `You are the support assistant of a travel company. Policies follow. ${words(7, 1_250, 1_250)}`;

/** Turn N's user message: 30-150 words. */
export function userMessage(turn: number): string {
  return `Turn ${turn}. ${words(1_000 + turn, 30, 150)}`;
}

/** The reply to turn N: 80-350 words. */
function replyText(turn: number): string {
  return `Answer ${turn}. ${words(50_000 + turn, 80, 350)}`;
}

function lastTurnNumber(messages: StandInMessage[]): number {
  for (let index = messages.length - 1; index >= 0; index--) {
    const content = messages[index]?.content;
    const match = typeof content === 'string' ? /Turn (\d+)\./.exec(content) : null;
    if (match) return Number(match[1]);
  }
  return 0;
}

/** The stand-in's replies: the turn's reply, or a summary (200-300 words) naming the last turn it covers. */
function reply({ body, messages }: ReplyRequest): string {
  const turn = lastTurnNumber(messages);
  if (typeof body.prompt_cache_key === 'string' && body.prompt_cache_key.endsWith('/summary')) {
    return `Summary through turn ${turn}. ${words(90_000 + turn, 200, 300)}`;
  }
  return replyText(turn);
}

// ---- the run -----------------------------------------------------------------------------------------------------

interface PolicyRun {
  promptTokens: number;
  cachedTokens: number;
  summaryCalls: number;
  summaryCompletionTokens: number;
  /** Per turn: past turns sent, and the prompt tokens beyond the system message, the new message and the priming. */
  keptTurns: number[];
  historyTokens: number[];
  seconds: number;
}

interface TurnAnswer {
  usage: { promptTokens: number; cachedPromptTokens: number };
  context: { promptTokens: number; droppedTurns: number };
}

async function runPolicy(
  bench: BenchSetup,
  model: ModelStandIn,
  env: Record<string, string>,
  options: CostOptions,
): Promise<PolicyRun> {
  const child = await startChildApp({
    compiled: bench.compiled,
    env: {
      // gpt-4o's own 128,000-token window: the budget is the history cap below it.
      ...Object.fromEntries(Object.entries(bench.appEnv).filter(([name]) => name !== 'CHAT_TOKEN_LIMIT')),
      AZURE_OPENAI_ENDPOINT: model.url,
      AZURE_OPENAI_MODEL: 'gpt-4o',
      CHAT_HISTORY_TOKEN_LIMIT: String(options.budget),
      CHAT_MAX_RESPONSE_TOKENS: '1024',
      ...env,
    },
  });
  try {
    await waitListening(child);
    model.clear();
    const started = performance.now();
    const id = await createConversation(child.api, { system: COST_SYSTEM_MESSAGE });
    const run: PolicyRun = {
      promptTokens: 0,
      cachedTokens: 0,
      summaryCalls: 0,
      summaryCompletionTokens: 0,
      keptTurns: [],
      historyTokens: [],
      seconds: 0,
    };
    const systemTokens = bench.tokenizer.countTokens(COST_SYSTEM_MESSAGE) + 3 + 1;
    for (let turn = 1; turn <= options.turns; turn++) {
      const content = userMessage(turn);
      const response = await fetch(`${child.api}/conversations/${id}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ content }),
      });
      const text = await response.text();
      if (response.status !== 200) throw new Error(`Turn ${turn} answered ${response.status}: ${text}`);
      const answer = JSON.parse(text) as TurnAnswer;
      run.promptTokens += answer.usage.promptTokens;
      run.cachedTokens += answer.usage.cachedPromptTokens;
      run.keptTurns.push(turn - 1 - answer.context.droppedTurns);
      const newMessageTokens = bench.tokenizer.countTokens(content) + 3 + 1;
      run.historyTokens.push(answer.context.promptTokens - systemTokens - newMessageTokens - 3);
    }
    for (const request of model.requests) {
      if (request.body?.prompt_cache_key !== `${id}/summary`) continue;
      run.summaryCalls++;
      run.promptTokens += request.promptTokens ?? 0;
      run.cachedTokens += request.cachedTokens ?? 0;
      run.summaryCompletionTokens += request.completionTokens ?? 0;
    }
    run.seconds = (performance.now() - started) / 1000;
    return run;
  } finally {
    await child.stop();
  }
}

const billed = (run: PolicyRun) => run.promptTokens - run.cachedTokens + CACHED_PRICE * run.cachedTokens;
const average = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);

export async function measureCost(bench: BenchSetup, options: CostOptions): Promise<Figure[]> {
  const model = await startModelStandIn({ expectedApiKey: 'test-key', reply });
  const runs = new Map<string, PolicyRun>();
  try {
    for (const policy of POLICIES) {
      const budget = Math.round(options.budget * policy.budgetScale);
      runs.set(policy.label, await runPolicy(bench, model, policy.env, { ...options, budget }));
      bench.log(`  ${policy.label}: ${runs.get(policy.label)!.seconds.toFixed(1)} s`);
    }
  } finally {
    await model.close();
  }
  const base = billed(runs.get('drop_oldest')!);
  const figures: Figure[] = [];
  for (const policy of POLICIES) {
    const how = `${options.turns} turns, ${Math.round(options.budget * policy.budgetScale)}-token budget`;
    const run = runs.get(policy.label)!;
    figures.push(
      { name: `prompt_tokens_${policy.label}`, value: run.promptTokens, unit: 'tokens', note: how },
      {
        name: `cached_tokens_${policy.label}`,
        value: run.cachedTokens,
        unit: 'tokens',
        note: 'as the stand-in cached',
      },
      {
        name: `billed_prompt_tokens_${policy.label}`,
        value: Math.round(billed(run)),
        unit: 'tokens',
        note: `uncached + ${CACHED_PRICE} x cached`,
      },
      {
        name: `history_turns_avg_${policy.label}`,
        value: average(run.keptTurns),
        unit: 'turns',
        note: 'past turns sent, mean per turn',
      },
      {
        name: `history_tokens_avg_${policy.label}`,
        value: Math.round(average(run.historyTokens)),
        unit: 'tokens',
        note: 'prompt beyond system + new message, mean',
      },
    );
    if (policy.label !== 'drop_oldest') {
      figures.push({
        name: `billed_prompt_ratio_${policy.label}`,
        value: billed(run) / base,
        unit: 'x',
        ...(policy.label === 'stable_prefix' ? { target: '<= 0.6' } : {}),
        note: 'billed prompt tokens over drop-oldest',
      });
    }
  }
  const summaries = runs.get('stable_prefix_summary')!;
  figures.push(
    { name: 'summary_calls', value: summaries.summaryCalls, unit: 'calls', note: 'one per trim' },
    {
      name: 'summary_completion_tokens',
      value: summaries.summaryCompletionTokens,
      unit: 'tokens',
      note: 'written by the summary calls',
    },
  );
  return figures;
}
