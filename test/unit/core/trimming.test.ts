import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ContextLengthExceededError, ConversationFullError } from '../../../src/core/errors';
import type { ChatMessage, EncodingName, Role, StoredMessage, Tokenizer } from '../../../src/core/ports';
import { countMessageTokens, REPLY_PRIMING_TOKENS, withCountsUnder } from '../../../src/core/tokens/countTokens';
import { planContext, type CountedMessage, type TrimBudget } from '../../../src/core/trimming';

/** One token per whitespace-separated word; counts its encode calls. */
class CountingTokenizer implements Tokenizer {
  calls = 0;
  constructor(readonly encoding: EncodingName = 'o200k_base') {}
  countTokens(text: string): number {
    this.calls++;
    return text.split(/\s+/).filter((word) => word.length > 0).length;
  }
  specialTokens(): readonly string[] {
    return [];
  }
}

function message(role: Role, tokens: number, content = `${role} ${tokens}`): CountedMessage {
  return { role, content, tokens };
}

/** A past turn: a user message of 10 tokens and its 20-token reply. */
function turn(index: number): CountedMessage[] {
  return [message('user', 10, `question ${index}`), message('assistant', 20, `answer ${index}`)];
}

function turns(count: number): CountedMessage[] {
  return Array.from({ length: count }, (_, index) => turn(index + 1)).flat();
}

const PROLOGUE = [
  message('system', 10, 'system prompt'),
  message('user', 5, 'example question'),
  message('assistant', 5, 'example answer'),
];
const NEW_MESSAGE = message('user', 8, 'the new question');
/** Prologue + new message + reply priming. */
const PINNED = 10 + 5 + 5 + 8 + REPLY_PRIMING_TOKENS;

function budget(tokenLimit: number, overrides: Partial<TrimBudget> = {}): TrimBudget {
  return { tokenLimit, maxResponseTokens: 20, policy: 'drop-oldest', maxTurns: 20, ...overrides };
}

const contents = (messages: ChatMessage[]) => messages.map((m) => m.content);

test('when everything fits, everything is sent in order, without the counts', () => {
  const plan = planContext({ prologue: PROLOGUE, history: turns(3), newMessage: NEW_MESSAGE, budget: budget(10_000) });
  assert.deepEqual(plan.messages, [
    { role: 'system', content: 'system prompt' },
    { role: 'user', content: 'example question' },
    { role: 'assistant', content: 'example answer' },
    { role: 'user', content: 'question 1' },
    { role: 'assistant', content: 'answer 1' },
    { role: 'user', content: 'question 2' },
    { role: 'assistant', content: 'answer 2' },
    { role: 'user', content: 'question 3' },
    { role: 'assistant', content: 'answer 3' },
    { role: 'user', content: 'the new question' },
  ]);
  assert.equal(plan.promptTokens, PINNED + 3 * 30);
  assert.deepEqual([plan.droppedTurns, plan.keptTurns], [0, 3]);
});

test('whole turns are dropped oldest first; the prologue stays pinned and the new message is kept', () => {
  // 121 + 20 >= 100 -> drop turn 1 -> 91 + 20 >= 100 -> drop turn 2 -> 61 + 20 < 100.
  const plan = planContext({ prologue: PROLOGUE, history: turns(3), newMessage: NEW_MESSAGE, budget: budget(100) });
  assert.deepEqual(contents(plan.messages), [
    'system prompt',
    'example question',
    'example answer',
    'question 3',
    'answer 3',
    'the new question',
  ]);
  assert.equal(plan.promptTokens, PINNED + 30);
  assert.deepEqual([plan.droppedTurns, plan.keptTurns], [2, 1]);
});

test('the >= boundary: a context exactly at the limit is trimmed, one token under is not', () => {
  const full = PINNED + 2 * 30;
  const atLimit = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: NEW_MESSAGE,
    budget: budget(full + 20),
  });
  assert.equal(atLimit.droppedTurns, 1);
  assert.equal(atLimit.promptTokens, full - 30);

  const underLimit = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: NEW_MESSAGE,
    budget: budget(full + 20 + 1),
  });
  assert.equal(underLimit.droppedTurns, 0);
  assert.equal(underLimit.promptTokens, full);
});

test('a turn with several assistant messages goes as a whole; what is sent never starts with an assistant', () => {
  const history = [
    message('user', 10, 'q1'),
    message('assistant', 20, 'a1 part 1'),
    message('assistant', 20, 'a1 part 2'),
    ...turn(2),
  ];
  const plan = planContext({
    prologue: PROLOGUE,
    history,
    newMessage: NEW_MESSAGE,
    budget: budget(PINNED + 30 + 20 + 1),
  });
  assert.deepEqual(contents(plan.messages).slice(3), ['question 2', 'answer 2', 'the new question']);
  assert.deepEqual([plan.droppedTurns, plan.keptTurns], [1, 1]);
});

test('assistant messages with no user message before them are never sent first after the prologue', () => {
  const history = [message('assistant', 20, 'orphan reply'), ...turn(1)];
  const plan = planContext({ prologue: PROLOGUE, history, newMessage: NEW_MESSAGE, budget: budget(10_000) });
  assert.deepEqual(contents(plan.messages).slice(3), ['question 1', 'answer 1', 'the new question']);
  assert.equal(plan.promptTokens, PINNED + 30);
  assert.equal(plan.messages[PROLOGUE.length]!.role, 'user');
});

test('a name is counted (its encoded length + 1) and moves the trimming boundary', () => {
  const tokenizer = new CountingTokenizer();
  const plain = { role: 'user' as const, content: 'hello there' };
  const named = { ...plain, name: 'alice' };
  const plainCount = countMessageTokens(plain, tokenizer);
  const namedCount = countMessageTokens(named, tokenizer);
  assert.equal(namedCount, plainCount + 1 + 1);

  // A limit the plain message fits with every turn, and the named one does not.
  const limit = 10 + 5 + 5 + plainCount + REPLY_PRIMING_TOKENS + 2 * 30 + 20 + 1;
  const withPlain = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: { ...plain, tokens: plainCount },
    budget: budget(limit),
  });
  const withName = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: { ...named, tokens: namedCount },
    budget: budget(limit),
  });
  assert.equal(withPlain.droppedTurns, 0);
  assert.equal(withName.droppedTurns, 1);
  assert.deepEqual(withName.messages.at(-1), { role: 'user', content: 'hello there', name: 'alice' });
});

test('refused with context_length_exceeded when the prologue and the new message alone do not fit', () => {
  for (const history of [[], turns(5)]) {
    assert.throws(
      () => planContext({ prologue: PROLOGUE, history, newMessage: NEW_MESSAGE, budget: budget(PINNED + 20) }),
      (error: unknown) => {
        assert.ok(error instanceof ContextLengthExceededError);
        assert.equal(error.code, 'context_length_exceeded');
        assert.equal(error.status, 400);
        assert.match(error.detail, new RegExp(`${PINNED} prompt tokens`));
        assert.match(error.detail, /20 tokens reserved for the reply/);
        assert.match(error.detail, new RegExp(`limit of ${PINNED + 20} tokens`));
        assert.match(error.detail, /Shorten the message by at least 1 tokens/);
        assert.deepEqual(error.extensions, {
          promptTokens: PINNED,
          messageTokens: 8,
          maxResponseTokens: 20,
          tokenLimit: PINNED + 20,
        });
        return true;
      },
    );
  }
  // One token more and the pinned part fits, with every past turn dropped.
  const plan = planContext({
    prologue: PROLOGUE,
    history: turns(5),
    newMessage: NEW_MESSAGE,
    budget: budget(PINNED + 21),
  });
  assert.deepEqual([plan.droppedTurns, plan.keptTurns, plan.promptTokens], [5, 0, PINNED]);
  assert.deepEqual(contents(plan.messages), [...contents(PROLOGUE), 'the new question']);
});

test('max-turns sends at most maxTurns newest turns, then applies the rule', () => {
  const capped = planContext({
    prologue: PROLOGUE,
    history: turns(5),
    newMessage: NEW_MESSAGE,
    budget: budget(10_000, { policy: 'max-turns', maxTurns: 2 }),
  });
  assert.deepEqual(contents(capped.messages).slice(3, -1), ['question 4', 'answer 4', 'question 5', 'answer 5']);
  assert.deepEqual([capped.droppedTurns, capped.keptTurns, capped.promptTokens], [3, 2, PINNED + 60]);

  const cappedThenTrimmed = planContext({
    prologue: PROLOGUE,
    history: turns(5),
    newMessage: NEW_MESSAGE,
    budget: budget(PINNED + 60 + 20, { policy: 'max-turns', maxTurns: 2 }),
  });
  assert.deepEqual(contents(cappedThenTrimmed.messages).slice(3, -1), ['question 5', 'answer 5']);
  assert.deepEqual([cappedThenTrimmed.droppedTurns, cappedThenTrimmed.keptTurns], [4, 1]);

  const none = planContext({
    prologue: PROLOGUE,
    history: turns(5),
    newMessage: NEW_MESSAGE,
    budget: budget(10_000, { policy: 'max-turns', maxTurns: 0 }),
  });
  assert.deepEqual([none.droppedTurns, none.keptTurns], [5, 0]);

  const fewer = planContext({
    prologue: PROLOGUE,
    history: turns(1),
    newMessage: NEW_MESSAGE,
    budget: budget(10_000, { policy: 'max-turns', maxTurns: 2 }),
  });
  assert.deepEqual([fewer.droppedTurns, fewer.keptTurns], [0, 1]);
});

test('reject sends everything when it fits and refuses with conversation_full rather than drop a turn', () => {
  const fits = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: NEW_MESSAGE,
    budget: budget(PINNED + 60 + 21, { policy: 'reject' }),
  });
  assert.deepEqual([fits.droppedTurns, fits.keptTurns], [0, 2]);

  assert.throws(
    () =>
      planContext({
        prologue: PROLOGUE,
        history: turns(2),
        newMessage: NEW_MESSAGE,
        budget: budget(PINNED + 60 + 20, { policy: 'reject' }),
      }),
    (error: unknown) => {
      assert.ok(error instanceof ConversationFullError);
      assert.equal(error.code, 'conversation_full');
      assert.match(error.detail, /start a new conversation/);
      assert.equal(error.extensions.promptTokens, PINNED + 60);
      return true;
    },
  );
});

test('reject still answers context_length_exceeded when the new message alone does not fit', () => {
  assert.throws(
    () =>
      planContext({
        prologue: PROLOGUE,
        history: turns(2),
        newMessage: NEW_MESSAGE,
        budget: budget(PINNED + 20, { policy: 'reject' }),
      }),
    ContextLengthExceededError,
  );
});

function stored(seq: number, role: 'user' | 'assistant', content: string, tokenizer: Tokenizer): StoredMessage {
  const tokens = countMessageTokens({ role, content }, tokenizer);
  return {
    seq,
    id: `m${seq}`,
    role,
    content,
    createdAt: '2025-01-01T00:00:00.000Z',
    tokens,
    encoding: tokenizer.encoding,
  };
}

test('messages counted under another encoding are recounted before trimming; matching ones are not', () => {
  const cl100k = new CountingTokenizer('cl100k_base');
  const o200k = new CountingTokenizer('o200k_base');
  // Stored under cl100k_base with a count o200k_base would not give (pretend the encodings disagree).
  const old = { ...stored(1, 'user', 'one two three', cl100k), tokens: 999 };
  const current = stored(2, 'assistant', 'four five', o200k);
  o200k.calls = 0;

  const history = withCountsUnder([old, current], o200k);
  assert.equal(o200k.calls, 2, 'only the stale message is encoded again (role and content)');
  assert.deepEqual(
    history.map((m) => m.tokens),
    [3 + 1 + 3, 3 + 1 + 2],
  );
  const plan = planContext({ prologue: [], history, newMessage: message('user', 5), budget: budget(10_000) });
  assert.equal(plan.promptTokens, 7 + 6 + 5 + REPLY_PRIMING_TOKENS);
});

/** One turn as the core runs it: count the new message, trim over stored counts, count the reply. */
function encodeCallsForOneTurn(storedMessages: number): number {
  const tokenizer = new CountingTokenizer();
  const storedHistory: StoredMessage[] = [];
  for (let seq = 1; seq <= storedMessages; seq++) {
    storedHistory.push(stored(seq, seq % 2 === 1 ? 'user' : 'assistant', `message number ${seq}`, tokenizer));
  }
  tokenizer.calls = 0;

  const newMessage = { role: 'user' as const, content: 'what next?' };
  const newCounted = { ...newMessage, tokens: countMessageTokens(newMessage, tokenizer) };
  planContext({
    prologue: [message('system', 10)],
    history: withCountsUnder(storedHistory, tokenizer),
    newMessage: newCounted,
    budget: budget(2000),
  });
  const reply = { role: 'assistant' as const, content: 'this is the reply' };
  countMessageTokens(reply, tokenizer); // stored with the reply
  tokenizer.countTokens(reply.content); // completion tokens
  return tokenizer.calls;
}

test('encode calls per turn do not depend on the length of the history', () => {
  const withTen = encodeCallsForOneTurn(10);
  const withThousand = encodeCallsForOneTurn(1000);
  assert.equal(withTen, withThousand);
  assert.equal(withThousand, 5, 'role + content of the new message, role + content + completion of the reply');
});

test('trimming a long history is one pass over the stored counts', () => {
  const history = turns(5000);
  const plan = planContext({ prologue: PROLOGUE, history, newMessage: NEW_MESSAGE, budget: budget(PINNED + 20 + 301) });
  assert.deepEqual([plan.droppedTurns, plan.keptTurns, plan.promptTokens], [4990, 10, PINNED + 300]);
  assert.deepEqual(contents(plan.messages).slice(3, 5), ['question 4991', 'answer 4991']);
});

// ---- stable-prefix, the history cap and the pinned summary ----------------------------------------------------

/** A conversation run turn by turn through planContext, carrying the window start as the turn pipeline does. */
function converse(turnCount: number, trimBudget: TrimBudget, summary?: CountedMessage) {
  const history: CountedMessage[] = [];
  const plans: ReturnType<typeof planContext>[] = [];
  let windowStartSeq: number | undefined;
  for (let index = 1; index <= turnCount; index++) {
    const newMessage = message('user', 10, `question ${index}`);
    const plan = planContext({
      prologue: PROLOGUE,
      history: [...history],
      newMessage,
      budget: trimBudget,
      ...(summary ? { summary } : {}),
      ...(windowStartSeq !== undefined ? { windowStartSeq } : {}),
    });
    plans.push(plan);
    windowStartSeq = plan.windowStartSeq;
    history.push(newMessage, message('assistant', 20, `answer ${index}`));
  }
  return plans;
}

const isPrefix = (prefix: ChatMessage[], of: ChatMessage[]) =>
  prefix.length <= of.length && prefix.every((entry, index) => JSON.stringify(entry) === JSON.stringify(of[index]));

test('stable-prefix: appends until the budget, trims whole turns down to low water, then appends again', () => {
  // Prompt budget 400 - 20 - 1 = 379; low water 0.6 -> at most 227 after a trim. Pinned: 20 + 10 + 3 = 33.
  const plans = converse(40, budget(400, { policy: 'stable-prefix', lowWater: 0.6 }));
  let trims = 0;
  for (const [index, plan] of plans.entries()) {
    assert.ok(plan.promptTokens <= 379, `turn ${index + 1}: ${plan.promptTokens} over the budget`);
    assert.equal(plan.promptTokens, countOf(plan.messages), `turn ${index + 1}: counted exactly`);
    assert.deepEqual(contents(plan.messages.slice(0, 3)), contents(PROLOGUE), 'the prologue is pinned');
    assert.equal(plan.messages[3]?.role, 'user', 'never an assistant first after the prologue');
    const previous = plans[index - 1];
    if (!previous) continue;
    if (plan.droppedTurns === previous.droppedTurns) {
      // Between trims the previous request is a prefix of this one, new message included (it is history now).
      assert.ok(isPrefix(previous.messages, plan.messages), `turn ${index + 1} repeats turn ${index}'s prompt`);
    } else {
      trims++;
      assert.ok(plan.promptTokens <= Math.floor(0.6 * 379), `turn ${index + 1}: trimmed to ${plan.promptTokens}`);
      // It trimmed because appending would not fit.
      assert.ok(previous.promptTokens + 30 > 379);
    }
  }
  assert.ok(trims >= 2, `${trims} trims in 40 turns`);
  // Drop-oldest over the same conversation shifts the prompt on every turn once it is full.
  const oldest = converse(40, budget(400));
  const shifted = oldest.slice(1).filter((plan, index) => !isPrefix(oldest[index]!.messages, plan.messages)).length;
  assert.ok(shifted > 25, `drop-oldest changed its prefix on ${shifted} turns`);
});

/** The guide's count of what a plan sends, with the test's counts (each message's `tokens`). */
function countOf(messages: ChatMessage[]): number {
  const all = [
    ...PROLOGUE,
    SUMMARY,
    ...turns(60),
    ...Array.from({ length: 60 }, (_, i) => message('user', 10, `question ${i + 1}`)),
  ];
  return (
    messages.reduce((sum, sent) => sum + all.find((candidate) => candidate.content === sent.content)!.tokens, 0) +
    REPLY_PRIMING_TOKENS
  );
}

const SUMMARY = message('system', 40, 'summary of what was dropped');

test('stable-prefix keeps the stored window start while the prompt fits, even when earlier turns would fit too', () => {
  const history = turns(3);
  const plan = planContext({
    prologue: PROLOGUE,
    history,
    newMessage: NEW_MESSAGE,
    budget: budget(10_000, { policy: 'stable-prefix', lowWater: 0.6 }),
    windowStartSeq: 3,
  });
  assert.deepEqual(contents(plan.messages).slice(3), [
    'question 2',
    'answer 2',
    'question 3',
    'answer 3',
    'the new question',
  ]);
  assert.deepEqual([plan.droppedTurns, plan.keptTurns, plan.windowStartSeq], [1, 2, 3]);
  // Other policies ignore it.
  const oldest = planContext({
    prologue: PROLOGUE,
    history,
    newMessage: NEW_MESSAGE,
    budget: budget(10_000),
    windowStartSeq: 3,
  });
  assert.deepEqual([oldest.droppedTurns, oldest.windowStartSeq], [0, 1]);
});

test('stable-prefix refuses like drop-oldest when the new message alone does not fit; it drops everything else first', () => {
  const big = message('user', 400, 'a long question');
  assert.throws(
    () =>
      planContext({
        prologue: PROLOGUE,
        history: turns(2),
        newMessage: big,
        budget: budget(400, { policy: 'stable-prefix', lowWater: 0.6 }),
      }),
    ContextLengthExceededError,
  );
  const fits = message('user', 340, 'a long question');
  const plan = planContext({
    prologue: PROLOGUE,
    history: turns(2),
    newMessage: fits,
    budget: budget(400, { policy: 'stable-prefix', lowWater: 0.6 }),
  });
  assert.deepEqual(contents(plan.messages).slice(3), ['a long question']);
  assert.deepEqual([plan.droppedTurns, plan.windowStartSeq], [2, 5]);
});

test('the history cap keeps the prompt within CHAT_HISTORY_TOKEN_LIMIT, and never refuses what fits the window', () => {
  for (const policy of ['drop-oldest', 'stable-prefix', 'max-turns'] as const) {
    const plans = converse(30, budget(100_000, { policy, lowWater: 0.6, historyTokenLimit: 200 }));
    for (const plan of plans) assert.ok(plan.promptTokens <= 200, `${policy}: ${plan.promptTokens}`);
    assert.ok(plans.at(-1)!.droppedTurns > 0, policy);
  }
  // Over the cap but within the window: sent alone, nothing refused.
  const plan = planContext({
    prologue: PROLOGUE,
    history: turns(3),
    newMessage: message('user', 300, 'a long question'),
    budget: budget(10_000, { historyTokenLimit: 200 }),
  });
  assert.deepEqual(contents(plan.messages).slice(3), ['a long question']);
  assert.equal(plan.promptTokens, 20 + 300 + REPLY_PRIMING_TOKENS);
  // reject counts the cap as the limit.
  assert.throws(
    () =>
      planContext({
        prologue: PROLOGUE,
        history: turns(10),
        newMessage: NEW_MESSAGE,
        budget: budget(10_000, { policy: 'reject', historyTokenLimit: 200 }),
      }),
    ConversationFullError,
  );
});

test('a summary is pinned right after the prologue and counted; a trim leaves room for its replacement', () => {
  const trimBudget = budget(400, { policy: 'stable-prefix', lowWater: 0.6, summaryReserveTokens: 100 });
  const plans = converse(40, trimBudget, SUMMARY);
  for (const plan of plans) {
    assert.equal(plan.messages[3]?.content, SUMMARY.content);
    assert.equal(plan.summarySent, true);
    assert.equal(plan.promptTokens, countOf(plan.messages));
    assert.ok(plan.promptTokens <= 379);
  }
  const trimmed = plans.filter((plan, index) => index > 0 && plan.droppedTurns !== plans[index - 1]!.droppedTurns);
  assert.ok(trimmed.length > 0);
  // With a 100-token summary in place of the 40-token one, the trimmed prompt is still at low water.
  for (const plan of trimmed) assert.ok(plan.promptTokens - 40 + 100 <= Math.floor(0.6 * 379), `${plan.promptTokens}`);
});

test('a summary that does not fit beside the new message is left out rather than refuse the message', () => {
  const plan = planContext({
    prologue: PROLOGUE,
    summary: SUMMARY,
    history: turns(2),
    newMessage: message('user', 330, 'a long question'),
    budget: budget(400, { policy: 'stable-prefix', lowWater: 0.6 }),
  });
  assert.equal(plan.summarySent, false);
  assert.deepEqual(contents(plan.messages).slice(3), ['a long question']);
});
