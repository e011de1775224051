/**
 * The project's one seeded PRNG (sfc32), for the packet fuzzer and the benchmarks. Every fuzz
 * case gets its own generator, derived from (run seed, case number) alone, so that `--replay
 * seed:case` rebuilds one case without generating the ones before it; a benchmark takes one
 * generator per seed, so that every run draws the same destination sets. No dependency, same
 * numbers on every machine.
 */

/** murmur3's 32-bit finaliser: spreads every input bit over the output. */
function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** The generator of case `index` of the run with `seed` (both non-negative integers). */
  static forCase(seed: number, index: number): Rng {
    const hi = Math.floor(index / 0x100000000) >>> 0;
    return new Rng(mix32(seed ^ 0x9e3779b9), mix32(index ^ 0x7f4a7c15), mix32(hi ^ mix32(seed)), 0x2545f491);
  }

  /** One generator for `seed` (a non-negative integer): the same numbers every time. */
  static seeded(seed: number): Rng {
    return Rng.forCase(seed, 0);
  }

  constructor(a: number, b: number, c: number, d: number) {
    this.a = a >>> 0;
    this.b = b >>> 0;
    this.c = c >>> 0;
    this.d = d >>> 0;
    // The first outputs of sfc32 still show the seed's structure: discard them.
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** 32 uniform bits. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** An integer in [0, n), n >= 1. */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }

  /** An integer in [lo, hi], both inclusive. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** true with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(items.length)] as T;
  }

  /** One of `choices`, each drawn with probability weight / total. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let r = (this.u32() / 0x100000000) * total;
    for (const [w, v] of choices) {
      if (r < w) return v;
      r -= w;
    }
    const last = choices[choices.length - 1];
    if (!last) throw new RangeError('weighted pick from an empty list');
    return last[1];
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}
