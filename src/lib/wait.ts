/**
 * Waiting: the one sleep and the one poll-until-ready loop, for the demo, the tests and the
 * benchmarks alike.
 */
import { setTimeout as delay } from 'node:timers/promises';

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return delay(ms);
}

export interface WaitOptions {
  /** time between two probes; default 200 ms */
  everyMs?: number;
  /** more to say when the wait times out (the tail of a log, the last state seen) */
  context?: () => string;
}

/**
 * Calls `probe` until it returns something other than undefined, and returns that. After
 * `timeoutMs` it throws an Error naming `what` it waited for (and `context`); an error the
 * probe throws ends the wait at once.
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | Promise<T | undefined>,
  opts: WaitOptions = {},
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${opts.context ? `\n${opts.context()}` : ''}`);
    await sleep(opts.everyMs ?? 200);
  }
}
