/**
 * What the control-plane rows share and nothing heavy: the name prefix of their network
 * namespaces, their report group, the token option they look for, and the stream of
 * timestamped events they wait on.
 */
import type { Figure } from '../report.js';

/** Network namespaces of these rows start with it (swept before a run). */
export const PREFIX = 'ntbench-';
export const GROUP: Figure['group'] = 'control plane';
/** The option every policy of these rows uses: kind 253 with netoken's ExID. */
export { NT_OPT_EXID_DEFAULT as EXID, NT_OPT_KIND_DEFAULT as KIND } from '../../src/lib/abi.js';

/** Wall-clock milliseconds with sub-millisecond resolution, comparable with pcap timestamps. */
export const now = (): number => performance.timeOrigin + performance.now();

/** A stream of timestamped events that callers wait on (register the wait before causing the event). */
export class Events<T> {
  private readonly waiters = new Set<{ pred: (e: T) => boolean; resolve: (e: T) => void }>();

  push(e: T): void {
    for (const w of this.waiters) {
      if (w.pred(e)) {
        this.waiters.delete(w);
        w.resolve(e);
      }
    }
  }

  waitFor(pred: (e: T) => boolean, timeoutMs: number, what: string, context?: () => string): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      const w = {
        pred,
        resolve: (e: T): void => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context()}` : ''}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
    // The caller awaits it later; a failure in between must not count as unhandled.
    p.catch(() => undefined);
    return p;
  }
}
