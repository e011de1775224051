/**
 * The map update rows' measurements, run by map-update.ts in a child process inside a network
 * namespace of its own (the hook needs a veth there):
 *
 *   node map-update-child.js '<MapChildInput as JSON>'
 *
 * prints one JSON line, the MapSizeResult of every prefix count.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { Datapath, type ApplyResult } from '../../src/agent/datapath.js';
import { EncodingMemo, computeDesired, type DesiredState } from '../../src/agent/desired.js';
import { detachAll } from '../../src/agent/hooks/detach.js';
import { listInterfaces } from '../../src/agent/interfaces.js';
import { layoutDir } from '../../src/agent/layout.js';
import { silentLogger } from '../../src/lib/log.js';
import { API, type TokenKeys, type TokenPolicy } from '../../src/lib/types.js';
import { binding } from '../../src/native/binding.js';
import { Rng } from '../../fuzz/rng.js';
import { EXID, KIND } from './common.js';
import type { MapChildInput, MapSizeResult } from './map-update.js';
import { bpfObjectPath } from '../../src/lib/package.js';

/** `count` distinct random IPv4 networks, /16 to /32, as CIDR text. */
function randomPrefixes(count: number, seed: number): string[] {
  const rng = Rng.seeded(seed);
  const next = (): number => rng.u32();
  const seen = new Set<string>();
  while (seen.size < count) {
    const len = 16 + (next() % 17);
    const net = len === 32 ? next() : (next() & ~(0xffffffff >>> len)) >>> 0;
    seen.add(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`);
  }
  return [...seen];
}

function benchPolicy(name: string, dev: string, cidrs: readonly string[]): TokenPolicy {
  return {
    apiVersion: API,
    kind: 'TokenPolicy',
    metadata: { name, generation: 1 },
    spec: {
      nodeSelector: {},
      interfaces: { names: [dev], patterns: [] },
      token: { mode: 'Static', secretRef: { name: `${name}-token` }, bind: [] },
      option: { kind: KIND, experimentId: EXID },
      egress: { destinations: cidrs.map((cidr) => ({ cidr, ports: [443] })) },
    },
  };
}

const counts = (r: ApplyResult): [number, number] => [r.mapWrites, r.mapDeletes];

/** The measurements of the map update rows, in the current network namespace (the child process). */
async function measure(input: MapChildInput): Promise<MapSizeResult[]> {
  const log = silentLogger();
  const b = binding();
  const interfaces = await listInterfaces();
  if (!interfaces.some((i) => i.name === input.dev)) throw new Error(`interface ${input.dev} is not in this network namespace`);
  const out: MapSizeResult[] = [];
  for (const n of input.prefixCounts) {
    const cidrs = randomPrefixes(n + 1, 0x4e54 + n);
    const name = 'bench';
    const keys = new Map<string, TokenKeys>([[name, { current: randomBytes(8) }]]);
    const first = benchPolicy(name, input.dev, cidrs.slice(0, n));
    const changed = benchPolicy(name, input.dev, [...cidrs.slice(0, n - 1), cidrs[n] as string]);
    const r: MapSizeResult = {
      prefixes: n,
      firstApplyMs: [],
      changedApplyMs: [],
      changedComputeMs: [],
      unchangedApplyMs: [],
      rawWriteMs: [],
      computeMs: [],
      reopenMs: [],
      restartApplyMs: [],
      writes: { first: [0, 0], changed: [0, 0], unchanged: [0, 0], restart: [0, 0] },
    };
    for (let run = 0; run < input.runs; run++) {
      const stateDir = `${input.stateBase}-${n}-${run}`;
      const runDir = `${input.runBase}-${n}-${run}`;
      const opts = { stateDir, runDir, objectPath: bpfObjectPath('marker'), attach: 'auto' as const, tcPriority: 1, log };
      // The memo lives as long as the agent process: kept from the first apply to the change, fresh after the restart.
      let memo = new EncodingMemo();
      const desiredFor = (p: TokenPolicy, dp: Datapath): DesiredState =>
        computeDesired({ policies: [p], keys, nodeLabels: {}, interfaces, previousIds: dp.previousIds(), memo });
      let dp: Datapath | null = null;
      try {
        dp = Datapath.open(opts);
        let t = performance.now();
        const want = desiredFor(first, dp);
        r.computeMs.push(performance.now() - t);
        const entries = [...want.egress4.values()];
        if (entries.length !== n) throw new Error(`the desired state holds ${entries.length} trie entries for ${n} prefixes`);
        const shape = b.mapFromPin(path.join(layoutDir(stateDir), 'nt_egress4'));
        const spec = shape.info;
        shape.close();
        // The baseline: the same entries into a fresh trie of the same shape, one update each.
        const raw = (): number => {
          const m = b.createMap({
            type: spec.type,
            keySize: spec.keySize,
            valueSize: spec.valueSize,
            maxEntries: spec.maxEntries,
            flags: spec.flags,
            name: 'ntbench_raw',
          });
          try {
            const t0 = performance.now();
            for (const [k, v] of entries) m.update(k, v);
            return performance.now() - t0;
          } finally {
            m.close();
          }
        };
        // Alternate which goes first, so a drift in the machine's load falls on both.
        if (run % 2 === 1) r.rawWriteMs.push(raw());

        t = performance.now();
        const a1 = dp.apply(want);
        r.firstApplyMs.push(performance.now() - t);
        if (a1.errors.length > 0 || a1.hooks.length !== 1)
          throw new Error(`the first apply did not attach one hook: ${JSON.stringify(a1.errors)}`);

        t = performance.now();
        const want2 = desiredFor(changed, dp);
        r.changedComputeMs.push(performance.now() - t);
        t = performance.now();
        const a2 = dp.apply(want2);
        r.changedApplyMs.push(performance.now() - t);

        t = performance.now();
        const a3 = dp.apply(want2);
        r.unchangedApplyMs.push(performance.now() - t);

        dp.close();
        dp = null;
        t = performance.now();
        dp = Datapath.open(opts);
        r.reopenMs.push(performance.now() - t);
        memo = new EncodingMemo();
        const want3 = desiredFor(changed, dp);
        t = performance.now();
        const a4 = dp.apply(want3);
        r.restartApplyMs.push(performance.now() - t);

        if (run % 2 === 0) r.rawWriteMs.push(raw());

        // What the kernel holds must be exactly the changed policy's prefixes.
        const held = b.mapFromPin(path.join(layoutDir(stateDir), 'nt_egress4'));
        const heldKeys = new Set(held.keys().map((k) => k.toString('hex')));
        held.close();
        const missing = [...want3.egress4.keys()].filter((k) => !heldKeys.has(k)).length;
        if (heldKeys.size !== n || missing !== 0) {
          throw new Error(
            `after the changed apply the trie holds ${heldKeys.size} entries (${missing} of the policy's missing); want exactly the policy's ${n}`,
          );
        }
        if (run === 0) r.writes = { first: counts(a1), changed: counts(a2), unchanged: counts(a3), restart: counts(a4) };
      } finally {
        dp?.close();
        detachAll(stateDir, runDir, 1, log);
        rmSync(stateDir, { recursive: true, force: true });
        rmSync(runDir, { recursive: true, force: true });
      }
    }
    out.push(r);
  }
  return out;
}

measure(JSON.parse(process.argv[2] ?? '{}') as MapChildInput).then(
  (r) => process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0)),
  (err: unknown) => {
    process.stderr.write(`map update benchmark: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
