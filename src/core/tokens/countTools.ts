/**
 * Tokens that tool definitions add to a prompt, by the method OpenAI's cookbook publishes ("How to count tokens with
 * tiktoken", section 7, `num_tokens_for_tools`): per function a fixed start plus the encoded `name:description`
 * (a trailing period dropped); when it has properties, a fixed start plus per property a fixed cost and the encoded
 * `name:type:description` (trailing period dropped), and for an enum a fixed adjustment plus per item a fixed cost and
 * the encoded item; a fixed end once when any function is sent. The cookbook's constants are per model: gpt-4o and
 * gpt-4o-mini (o200k_base) start a function at 7, gpt-4 and gpt-3.5-turbo (cl100k_base) at 10; the rest agree. We key
 * them by encoding. Its published check: the weather tool with its two messages counts 101 (gpt-4o) and 105 (gpt-4),
 * as the service reported.
 *
 * The method reads only the top level of `parameters.properties`: nested objects and array items are not counted.
 * Where a property has no `type` or `description` the cookbook would fail; we count an empty string. A type list
 * (`["string", "null"]`) is written joined by commas.
 */
import type { EncodingName, ToolDefinition, Tokenizer } from '../ports';

interface ToolConstants {
  funcInit: number;
  propInit: number;
  propKey: number;
  enumInit: number;
  enumItem: number;
  funcEnd: number;
}

const CONSTANTS: Record<EncodingName, ToolConstants> = {
  o200k_base: { funcInit: 7, propInit: 3, propKey: 3, enumInit: -3, enumItem: 3, funcEnd: 12 },
  cl100k_base: { funcInit: 10, propInit: 3, propKey: 3, enumInit: -3, enumItem: 3, funcEnd: 12 },
};

function withoutFinalPeriod(text: string): string {
  return text.endsWith('.') ? text.slice(0, -1) : text;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function typeText(type: unknown): string {
  if (typeof type === 'string') return type;
  if (Array.isArray(type)) return type.map(String).join(',');
  return '';
}

/** Prompt tokens the definitions add (0 for none). */
export function countToolDefinitionTokens(tools: readonly ToolDefinition[], tokenizer: Tokenizer): number {
  if (tools.length === 0) return 0;
  const c = CONSTANTS[tokenizer.encoding];
  let tokens = 0;
  for (const tool of tools) {
    tokens += c.funcInit;
    tokens += tokenizer.countTokens(`${tool.name}:${withoutFinalPeriod(tool.description)}`);
    const properties = isRecord(tool.parameters['properties']) ? tool.parameters['properties'] : {};
    const keys = Object.keys(properties);
    if (keys.length === 0) continue;
    tokens += c.propInit;
    for (const key of keys) {
      tokens += c.propKey;
      const property = isRecord(properties[key]) ? properties[key] : {};
      const enumValues = property['enum'];
      if (Array.isArray(enumValues)) {
        tokens += c.enumInit;
        for (const item of enumValues) tokens += c.enumItem + tokenizer.countTokens(String(item));
      }
      const description = typeof property['description'] === 'string' ? property['description'] : '';
      tokens += tokenizer.countTokens(`${key}:${typeText(property['type'])}:${withoutFinalPeriod(description)}`);
    }
  }
  return tokens + c.funcEnd;
}
