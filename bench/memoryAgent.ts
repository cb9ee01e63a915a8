/**
 * Preloaded (`--require`) into an app process started with `--expose-gc` and an IPC channel: on the message
 * `{ type: 'memory' }` it collects garbage and answers the process's memory figures, so the benchmark can read
 * the app's own RSS (not its own) after a forced GC, and the CPU time the app used. On `{ type: 'cpu' }` it answers
 * the CPU time alone, collecting nothing (bench/cpuPerTurn.ts reads it before and after a round of turns).
 */
export interface MemorySample {
  type: 'memory';
  /** Resident set size after a full GC, bytes. */
  rss: number;
  heapUsed: number;
  external: number;
  /** Peak resident set size of the process so far, bytes. */
  maxRss: number;
  /** CPU time used by the process (user + system), milliseconds, before and after the forced GC. */
  cpuMsBeforeGc: number;
  cpuMs: number;
}

export interface CpuSample {
  type: 'cpu';
  /** CPU time used by the process (user + system), milliseconds. */
  cpuMs: number;
}

process.on('message', (message: unknown) => {
  if (typeof message !== 'object' || message === null) return;
  const { type } = message as { type?: unknown };
  if (type === 'cpu') {
    const cpu = process.cpuUsage();
    const sample: CpuSample = { type: 'cpu', cpuMs: (cpu.user + cpu.system) / 1000 };
    process.send?.(sample);
    return;
  }
  if (type !== 'memory') return;
  const cpuBefore = process.cpuUsage();
  const collect = (globalThis as { gc?: () => void }).gc;
  // Twice: the first pass can leave garbage that only becomes collectable once finalisers ran.
  collect?.();
  collect?.();
  const usage = process.memoryUsage();
  const cpu = process.cpuUsage();
  const sample: MemorySample = {
    type: 'memory',
    rss: usage.rss,
    heapUsed: usage.heapUsed,
    external: usage.external,
    maxRss: process.resourceUsage().maxRSS * 1024,
    cpuMsBeforeGc: (cpuBefore.user + cpuBefore.system) / 1000,
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
  process.send?.(sample);
});
