/**
 * Timing and reporting helpers: medians of repeated measurements, the printed table and the one machine-readable
 * result line (`name=value` pairs separated by spaces).
 */
import { performance } from 'node:perf_hooks';

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('The median of nothing is undefined.');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Milliseconds `action` took. */
export async function timeMs(action: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await action();
  return performance.now() - start;
}

export interface Figure {
  /** `snake_case`; the key in the result line. */
  name: string;
  value: number;
  unit: string;
  /** What the issue asks for, e.g. `<= 1.5`. */
  target?: string;
  /** How it was measured, in a few words. */
  note?: string;
}

/** Four significant digits, integers as they are. */
export function formatValue(value: number): string {
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(4)));
}

export function formatTable(figures: readonly Figure[]): string {
  const rows = figures.map((figure) => [
    figure.name,
    formatValue(figure.value),
    figure.unit,
    figure.target ?? '',
    figure.note ?? '',
  ]);
  const header = ['figure', 'value', 'unit', 'target', 'how'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === 1 ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)].join('\n');
}

const PAIR = /^([a-z][a-z0-9_]*)=(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)$/;

/** The final line: every figure as `name=value`, in order. */
export function formatResultLine(figures: readonly Figure[]): string {
  return figures.map((figure) => `${figure.name}=${formatValue(figure.value)}`).join(' ');
}

/** Reads a result line back; throws on anything that is not `name=number` pairs. */
export function parseResultLine(line: string): Record<string, number> {
  const result: Record<string, number> = {};
  for (const pair of line.trim().split(/\s+/)) {
    const match = PAIR.exec(pair);
    if (!match) throw new Error(`Not a name=value pair: ${JSON.stringify(pair)}`);
    const [, name, value] = match;
    if (name! in result) throw new Error(`${name} appears twice in the result line.`);
    result[name!] = Number(value);
  }
  return result;
}

/** Runs `tasks` with at most `concurrency` at a time; resolves when all are done (rejects on the first failure). */
export async function runPool(count: number, concurrency: number, task: (index: number) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}
