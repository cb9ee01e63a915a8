/**
 * Preloaded (`--require`) into an app process to see where a cold start goes: it wraps Node's CommonJS loader and
 * adds each module's own load time (resolve, read, compile, run its body, minus the modules it requires in turn)
 * to the package the module belongs to. On the IPC message `{ type: 'requires' }` it answers the totals, and the
 * time from process start to this preload (Node's own boot).
 */
import Module from 'node:module';
import { performance } from 'node:perf_hooks';

export interface RequireTimings {
  type: 'requires';
  /** Milliseconds from process start until this preload ran. */
  bootMs: number;
  /** Own load time per package (app files are `app`), milliseconds, largest first. */
  packages: { name: string; ms: number; modules: number }[];
}

type Load = (request: string, parent: unknown, isMain: boolean) => unknown;
interface LoaderInternals {
  _load: Load;
  _resolveFilename(request: string, parent: unknown, isMain: boolean): string;
  _cache: Record<string, unknown>;
}

const bootMs = performance.now();
const loader = Module as unknown as LoaderInternals;
const originalLoad = loader._load;
const totals = new Map<string, { ms: number; modules: number }>();
/** Time spent in modules required by the module being loaded, one entry per level. */
const childTime: number[] = [];

/** `@scope/name`, `name`, the js-tiktoken rank files on their own, or `app` for everything outside node_modules. */
export function packageOf(filename: string): string {
  const parts = filename.split(/[\\/]node_modules[\\/]/);
  if (parts.length < 2) return 'app';
  const inside = parts.at(-1)!.split(/[\\/]/);
  const name = inside[0]!.startsWith('@') ? `${inside[0]}/${inside[1]}` : inside[0]!;
  if (name === 'js-tiktoken' && /[\\/]ranks[\\/]/.test(filename)) return `js-tiktoken ranks (${inside.at(-1)})`;
  return name;
}

loader._load = function load(this: unknown, request: string, parent: unknown, isMain: boolean): unknown {
  let filename: string | undefined;
  try {
    filename = Module.isBuiltin(request) ? undefined : loader._resolveFilename(request, parent, isMain);
  } catch {
    filename = undefined; // let the real loader report it
  }
  if (filename === undefined || filename in loader._cache) return originalLoad.call(this, request, parent, isMain);
  const start = performance.now();
  childTime.push(0);
  try {
    return originalLoad.call(this, request, parent, isMain);
  } finally {
    const elapsed = performance.now() - start;
    const own = elapsed - childTime.pop()!;
    if (childTime.length > 0) childTime[childTime.length - 1]! += elapsed;
    const name = packageOf(filename);
    const total = totals.get(name) ?? { ms: 0, modules: 0 };
    total.ms += own;
    total.modules += 1;
    totals.set(name, total);
  }
};

process.on('message', (message: unknown) => {
  if (typeof message !== 'object' || message === null || (message as { type?: unknown }).type !== 'requires') return;
  const answer: RequireTimings = {
    type: 'requires',
    bootMs,
    packages: [...totals.entries()].map(([name, total]) => ({ name, ...total })).sort((a, b) => b.ms - a.ms),
  };
  process.send?.(answer);
});
