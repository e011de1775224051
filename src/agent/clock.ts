/**
 * The wall clock keyed tokens need. BPF has no CLOCK_REALTIME: the agent measures how the
 * kernel's CLOCK_TAI (or, before 6.1, CLOCK_BOOTTIME) relates to the wall clock and writes
 * the offsets into nt_clock (layout: bpf/abi.h), again whenever they move.
 */
import { endianness } from 'node:os';
import { decodeClock, encodeClock } from '../lib/abi.js';
import type { Logger } from '../lib/log.js';
import type { NativeMap, NativeProgram } from '../native/binding.js';

/** How often the clocks are measured again between reconciles (the TAI offset changes only at leap seconds; the boottime one at clock steps). */
const CLOCK_SYNC_MS = 60_000;

export interface ClockReading {
  /** CLOCK_TAI - CLOCK_REALTIME, whole seconds, in ns (0 when the kernel has no CLOCK_TAI helper) */
  taiOffsetNs: bigint;
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns, to the millisecond */
  bootOffsetNs: bigint;
  /** the kernel has bpf_ktime_get_tai_ns (6.1+): the BPF side uses taiOffsetNs */
  hasTai: boolean;
}

/**
 * Read the kernel's clocks through the marker's nt_clock_probe and relate them to this
 * process's wall clock: what nt_clock needs (encodeClock). TAI and REALTIME differ by whole
 * seconds, so a millisecond-accurate reading of both gives the TAI offset exactly.
 */
export function measureClock(probe: NativeProgram, now: () => number = Date.now): ClockReading {
  const frame = Buffer.alloc(64);
  const t0 = now();
  const r = probe.testRun({ data: frame });
  const t1 = now();
  if (r.retval !== 2) throw new Error(`the clock probe returned ${r.retval}, want XDP_PASS (2)`);
  const read = (off: number): bigint => (endianness() === 'LE' ? r.data.readBigUInt64LE(off) : r.data.readBigUInt64BE(off));
  const realtimeNs = BigInt(Math.round(((t0 + t1) / 2) * 1000)) * 1000n;
  const hasTai = read(16) !== 0n;
  const taiSeconds = hasTai ? Math.round(Number(read(0) - realtimeNs) / 1e9) : 0;
  return { taiOffsetNs: BigInt(taiSeconds) * 1_000_000_000n, bootOffsetNs: realtimeNs - read(8), hasTai };
}

/** Keeps nt_clock right: measured on sync() and every minute in between. */
export class WallClock {
  private timer: NodeJS.Timeout | null = null;
  private last: ClockReading | undefined;

  constructor(
    private readonly probe: NativeProgram,
    private readonly map: NativeMap,
    private readonly log: Logger,
  ) {}

  /** Measure the kernel's clocks against the wall clock and write nt_clock when it moved. */
  sync(): void {
    const r = measureClock(this.probe);
    const key = Buffer.alloc(4);
    const cur = this.map.lookup(key);
    const old = cur ? decodeClock(cur) : undefined;
    // The boot offset is read to the millisecond: rewrite it only when it moved (a clock step).
    const moved = !old?.valid || old.taiOffsetNs !== r.taiOffsetNs || absBig(old.bootOffsetNs - r.bootOffsetNs) > 50_000_000n;
    if (moved) this.map.update(key, encodeClock(r.taiOffsetNs, r.bootOffsetNs));
    if (!this.last || this.last.taiOffsetNs !== r.taiOffsetNs || this.last.hasTai !== r.hasTai || moved) {
      this.log.info(
        'wall clock for keyed tokens',
        r.hasTai
          ? { clock: 'tai', taiMinusUtcSeconds: Number(r.taiOffsetNs / 1_000_000_000n) }
          : {
              clock: 'boottime',
              note: 'the kernel has no CLOCK_TAI helper (6.1+): a clock step is followed at the next measurement',
            },
      );
    }
    this.last = r;
  }

  /** Measure now, then every minute until stop(). */
  start(): void {
    this.sync();
    this.timer = setInterval(() => {
      try {
        this.sync();
      } catch (err) {
        this.log.warn('measuring the wall clock failed', { error: (err as Error).message });
      }
    }, CLOCK_SYNC_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

function absBig(x: bigint): bigint {
  return x < 0n ? -x : x;
}
