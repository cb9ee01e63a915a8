/**
 * Keeps a process on loopback: every TCP connection (node:net, so http, https, tls and undici's fetch alike) to an
 * address other than 127.0.0.0/8, ::1 or localhost is refused before any packet or DNS lookup leaves, as
 * ECONNREFUSED. Each refusal is appended to a file, with the method and path of the HTTP request that wanted it when
 * node:http(s) made it, so a test can say exactly what the code under test tried to reach. Installed in an app child
 * process by ./appProcess.ts when LOOPBACK_ONLY_LOG names that file.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import net from 'node:net';

export interface RefusedConnection {
  /** `host:port` */
  target: string;
  /** `METHOD /path?query` of the HTTP request that wanted the connection, when node:http(s) made it. */
  request?: string;
}

const LOOPBACK = /^(127(?:\.\d{1,3}){3}|::1|localhost|::ffff:127(?:\.\d{1,3}){3})$/i;

interface ConnectOptions {
  host?: string;
  port?: number | string;
  /** An IPC socket's path. */
  path?: string | null;
}

function refusalOf(args: unknown[]): RefusedConnection | undefined {
  // net.connect hands the socket its already normalised [options, listener] array.
  const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
  if (typeof first === 'object' && first !== null) {
    const options = first as ConnectOptions;
    if (options.port === undefined && options.path) return undefined; // a local (IPC) socket
    const host = options.host ?? 'localhost';
    return LOOPBACK.test(host) ? undefined : { target: `${host}:${String(options.port)}` };
  }
  if (typeof first === 'string' && !/^\d+$/.test(first)) return undefined; // an IPC path
  const host = typeof args[1] === 'string' ? args[1] : 'localhost';
  return LOOPBACK.test(host) ? undefined : { target: `${host}:${String(first)}` };
}

export function refuseNonLoopback(logFile: string): void {
  const connect = net.Socket.prototype.connect as (this: net.Socket, ...args: unknown[]) => net.Socket;
  net.Socket.prototype.connect = function guardedConnect(this: net.Socket, ...args: unknown[]): net.Socket {
    const refused = refusalOf(args);
    if (!refused) return connect.apply(this, args);
    const error = Object.assign(new Error(`connect ECONNREFUSED ${refused.target} (loopback-only test process)`), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
    });
    // Asynchronously, as a real refusal arrives: by then node:http has handed the socket to its request.
    setImmediate(() => {
      const request = (this as net.Socket & { _httpMessage?: { method?: string; path?: string } })._httpMessage;
      if (request?.path) refused.request = `${request.method ?? 'GET'} ${request.path}`;
      try {
        appendFileSync(logFile, `${JSON.stringify(refused)}\n`);
      } catch {
        // The test has finished and removed its folder: the refusal itself still stands.
      }
      this.destroy(error);
    });
    return this;
  } as typeof net.Socket.prototype.connect;
}

/** What a guarded process refused so far. */
export function refusedConnections(logFile: string): RefusedConnection[] {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as RefusedConnection);
}
