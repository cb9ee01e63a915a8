/**
 * The server tools of this deployment: one module per tool in this folder, enabled by CHAT_TOOLS. To add one, write
 * a module with defineTool (name, description, zod parameters, handler), add its name to ./catalog.ts and build it
 * below from its settings.
 */
import type { Logger } from '../core/dependencies';
import type { Clock } from '../core/ports';
import type { ServerTool } from '../core/tools';
import type { ServerToolName } from './catalog';
import { createGetCurrentTime } from './getCurrentTime';
import { createHttpLookup, type HttpLookupOptions } from './httpLookup';

export interface ServerToolOptions {
  enabled: readonly ServerToolName[];
  clock: Clock;
  /** Required when http_lookup is enabled (config.ts checks its settings). */
  httpLookup?: HttpLookupOptions;
  /** Where tools log what they do not tell the model (a lookup's network or identity failure). */
  log?: Logger;
}

export function createServerTools(options: ServerToolOptions): ReadonlyMap<string, ServerTool> {
  const build: Record<ServerToolName, () => ServerTool> = {
    get_current_time: () => createGetCurrentTime(options.clock),
    http_lookup: () => {
      if (!options.httpLookup) throw new Error('http_lookup is enabled without TOOL_HTTP_LOOKUP_URL.');
      return createHttpLookup({ ...(options.log ? { log: options.log } : {}), ...options.httpLookup });
    },
  };
  return new Map(options.enabled.map((name) => [name, build[name]()]));
}
