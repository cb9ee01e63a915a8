/** The names of the server tools this app ships (src/tools/): CHAT_TOOLS may enable any of them. */
export const SERVER_TOOL_NAMES = ['get_current_time', 'http_lookup'] as const;
export type ServerToolName = (typeof SERVER_TOOL_NAMES)[number];
