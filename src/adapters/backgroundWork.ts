/**
 * Work an adapter finishes after the request that started it has been answered (an activity entry's move after a
 * turn, a token settlement waiting for the caller's next admission). Every piece is tracked here so the host's `appTerminate` hook (src/setup.ts) can wait for it before the
 * process ends; each piece handles its own errors (a rejection here would be a bug, and is only reported).
 */
const running = new Set<Promise<unknown>>();

export function runInBackground(work: Promise<unknown>): void {
  const tracked = work.catch((error: unknown) => {
    console.error(`Background work failed: ${error instanceof Error ? error.message : String(error)}`);
  });
  running.add(tracked);
  void tracked.finally(() => running.delete(tracked));
}

/** Resolves once every piece started so far has ended. */
export async function settleBackgroundWork(): Promise<void> {
  while (running.size > 0) await Promise.all(running);
}
