/**
 * A server tool from a zod schema and a handler: the schema becomes the JSON Schema the model is shown (zod's own
 * `z.toJSONSchema`), and every call's arguments are validated against it before the handler sees them, so a
 * handler only ever gets arguments of its declared type. What does not validate reaches the model as a tool message
 * saying what was wrong (the core's loop turns InvalidToolArgumentsError into one).
 */
import * as z from 'zod';
import { toStorableText } from '../core/text';
import { InvalidToolArgumentsError, type ServerTool, type ToolContext } from '../core/tools';

/** The model's tool names: letters, digits, _ and -, at most 64 (OpenAI's rule). */
export const TOOL_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export interface ToolSpec<Parameters extends z.ZodObject> {
  name: string;
  description: string;
  /** An object schema; `.describe()` its fields: the descriptions are what the model reads. */
  parameters: Parameters;
  /**
   * Gets validated arguments, the caller, and a signal aborted at the tool's timeout: pass it to every I/O. A string
   * it returns has unpaired surrogates and NUL replaced by U+FFFD (storage refuses them); any other value is sent as
   * JSON, whose text never holds them.
   */
  handler(args: z.output<Parameters>, context: ToolContext): Promise<unknown>;
}

export function defineTool<Parameters extends z.ZodObject>(spec: ToolSpec<Parameters>): ServerTool {
  if (!TOOL_NAME_PATTERN.test(spec.name)) throw new Error(`Tool name ${JSON.stringify(spec.name)} is not valid.`);
  const { $schema: _dialect, ...parameters } = z.toJSONSchema(spec.parameters, { io: 'input' }) as Record<
    string,
    unknown
  >;
  return {
    name: spec.name,
    description: spec.description,
    parameters,
    async invoke(args: unknown, context: ToolContext): Promise<unknown> {
      const parsed = spec.parameters.safeParse(args);
      if (!parsed.success) throw new InvalidToolArgumentsError(z.prettifyError(parsed.error));
      const output = await spec.handler(parsed.data, context);
      return typeof output === 'string' ? toStorableText(output) : output;
    },
  };
}
