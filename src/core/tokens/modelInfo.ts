/**
 * What the core needs to know about the model behind a deployment: which tokenizer counts its tokens, how large
 * its context window is, and whether it is a reasoning model. Azure deployment names are arbitrary, so this is
 * resolved from the model name (AZURE_OPENAI_MODEL), never from the deployment name's shape.
 */
import type { EncodingName } from '../ports';

export interface ModelInfo {
  /** The name as given (trimmed). */
  model: string;
  /** The family the name resolved to, e.g. `gpt-4o-mini` for `gpt-4o-mini-2024-07-18`; the name itself if unknown. */
  family: string;
  encoding: EncodingName;
  /** Default token limit for the trimming rule (prompt + reserved reply must stay below it). */
  contextWindow: number;
  /** Reasoning models (o-series, gpt-5) take `max_completion_tokens` instead of `max_tokens`. */
  reasoning: boolean;
  /** False when the name matched no family and the defaults below were assumed. */
  known: boolean;
}

interface Family {
  family: string;
  /** Matched against the lower-cased name; the first family that matches wins, so specific names come first. */
  pattern: RegExp;
  encoding: EncodingName;
  contextWindow: number;
  reasoning: boolean;
}

/*
 * Context windows. gpt-35-turbo 4,096, gpt-4 8,192 and gpt-4-32k 32,768 are the figures of the Azure OpenAI chat
 * guide ("Work with chat completions models", Manage conversations). The newer families come from the Azure OpenAI
 * models page (learn.microsoft.com/azure/ai-foundry/openai/concepts/models, now "Foundry Models sold directly by
 * Azure"; source MicrosoftDocs/azure-ai-docs, articles/ai-foundry/openai/includes/models-azure-direct-openai.md):
 *   gpt-4 turbo-2024-04-09, gpt-4o, gpt-4o-mini ........ input 128,000 (output 4,096 / 16,384)
 *   gpt-4.1, gpt-4.1-mini, gpt-4.1-nano ................ 1,047,576 (128,000 on provisioned deployments)
 *   gpt-5, gpt-5-mini, gpt-5-nano, gpt-5.1 ............. 400,000 = input 272,000 + output 128,000
 *   gpt-5-chat, gpt-5.1-chat ........................... 128,000
 *   o1, o3, o3-mini, o4-mini ........................... input 200,000, output 100,000
 *   o1-mini, o1-preview ................................ input 128,000
 * The trimming rule checks `prompt + reserved reply < limit` only, so for gpt-5 the limit is the 272,000 input cap:
 * with 400,000 a long prompt would pass the rule yet exceed the model's input limit. Current gpt-35-turbo versions
 * (0125, 1106) accept 16,385 input tokens; 4,096 is the guide's conservative figure. CHAT_TOKEN_LIMIT overrides all.
 */
const FAMILIES: readonly Family[] = [
  // cl100k_base: GPT-3.5 Turbo and GPT-4 (Azure spells gpt-35-turbo; OpenAI gpt-3.5-turbo).
  family('gpt-35-turbo-16k', /^gpt-3\.?5-turbo-16k(-|$)/, 'cl100k_base', 16_384, false),
  family('gpt-35-turbo', /^gpt-3\.?5-turbo(-|$)/, 'cl100k_base', 4096, false),
  family('gpt-4-32k', /^gpt-4-32k(-|$)/, 'cl100k_base', 32_768, false),
  // GPT-4 Turbo and the previews it replaced (OpenAI's names; on Azure they are versions of gpt-4).
  family('gpt-4-turbo', /^gpt-4-(turbo|1106-preview|0125-preview|vision-preview)(-|$)/, 'cl100k_base', 128_000, false),
  family('gpt-4', /^gpt-4(-|$)/, 'cl100k_base', 8192, false),
  // o200k_base: everything since GPT-4o.
  family('gpt-4o-mini', /^gpt-4o-mini(-|$)/, 'o200k_base', 128_000, false),
  family('gpt-4o', /^(gpt-4o|chatgpt-4o-latest)(-|$)/, 'o200k_base', 128_000, false),
  family('gpt-4.1-mini', /^gpt-4\.1-mini(-|$)/, 'o200k_base', 1_047_576, false),
  family('gpt-4.1-nano', /^gpt-4\.1-nano(-|$)/, 'o200k_base', 1_047_576, false),
  family('gpt-4.1', /^gpt-4\.1(-|$)/, 'o200k_base', 1_047_576, false),
  // gpt-5-chat is documented as not reasoning, but it is sent max_completion_tokens too: every current model takes it.
  family('gpt-5-chat', /^gpt-5(\.\d+)?-chat(-|$)/, 'o200k_base', 128_000, true),
  family('gpt-5-mini', /^gpt-5(\.\d+)?-mini(-|$)/, 'o200k_base', 272_000, true),
  family('gpt-5-nano', /^gpt-5(\.\d+)?-nano(-|$)/, 'o200k_base', 272_000, true),
  family('gpt-5', /^gpt-5(\.\d+)?(-|$)/, 'o200k_base', 272_000, true),
  family('o1-mini', /^o1-mini(-|$)/, 'o200k_base', 128_000, true),
  family('o1-preview', /^o1-preview(-|$)/, 'o200k_base', 128_000, true),
  family('o1', /^o1(-|$)/, 'o200k_base', 200_000, true),
  family('o3-mini', /^o3-mini(-|$)/, 'o200k_base', 200_000, true),
  family('o3', /^o3(-|$)/, 'o200k_base', 200_000, true),
  family('o4-mini', /^o4-mini(-|$)/, 'o200k_base', 200_000, true),
];

function family(
  name: string,
  pattern: RegExp,
  encoding: EncodingName,
  contextWindow: number,
  reasoning: boolean,
): Family {
  return { family: name, pattern, encoding, contextWindow, reasoning };
}

/** What an unknown model gets: the tokenizer of every current family, and the smallest current window. */
export const UNKNOWN_MODEL_ENCODING: EncodingName = 'o200k_base';
export const UNKNOWN_MODEL_CONTEXT_WINDOW = 128_000;

/** Names already warned about: the warning is logged once per process per model name. */
const warnedUnknownModels = new Set<string>();

/**
 * Resolves a model name (case-insensitive; Azure's `gpt-35-turbo` and OpenAI's `gpt-3.5-turbo` both work; dated
 * versions such as `gpt-4o-2024-08-06` resolve to their family). An unknown name gets o200k_base and a 128,000
 * window, and `warn` is called once per process for that name.
 */
export function resolveModel(model: string, warn: (message: string) => void = console.warn): ModelInfo {
  const trimmed = model.trim();
  const name = trimmed.toLowerCase();
  const match = FAMILIES.find((candidate) => candidate.pattern.test(name));
  if (match) {
    const { encoding, contextWindow, reasoning } = match;
    return { model: trimmed, family: match.family, encoding, contextWindow, reasoning, known: true };
  }
  if (!warnedUnknownModels.has(name)) {
    warnedUnknownModels.add(name);
    warn(
      `Unknown model "${trimmed}": counting tokens with ${UNKNOWN_MODEL_ENCODING} and assuming a ` +
        `${UNKNOWN_MODEL_CONTEXT_WINDOW.toLocaleString('en-US')}-token context window. Set AZURE_OPENAI_MODEL to the ` +
        'model behind the deployment (e.g. gpt-4o-mini), or CHAT_TOKEN_LIMIT to its context window.',
    );
  }
  return {
    model: trimmed,
    family: name,
    encoding: UNKNOWN_MODEL_ENCODING,
    contextWindow: UNKNOWN_MODEL_CONTEXT_WINDOW,
    // A future o-series name is most likely a reasoning model too.
    reasoning: /^o\d/.test(name),
    known: false,
  };
}
