/**
 * What /healthz means for the operator: the process still makes progress. A timer ticks every
 * second and the event loop counts as alive while the last tick is recent; the operator adds
 * that no reconcile has been stuck for minutes. (/readyz: the caches have listed.)
 */
import type { Probe } from '../lib/http.js';

export class Heartbeat {
  private last = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly maxGapMs = 10_000) {
    this.timer = setInterval(() => {
      this.last = Date.now();
    }, 1000);
    this.timer.unref();
  }

  check(now = Date.now()): Probe {
    const gap = now - this.last;
    return gap <= this.maxGapMs
      ? { ok: true, detail: 'event loop alive' }
      : { ok: false, detail: `event loop stalled for ${gap} ms` };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
