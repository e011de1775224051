/**
 * The data path's map writes against real pinned maps. The policies here name an interface
 * index that does not exist and the desired states carry no hook: only maps are written,
 * nothing is attached anywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeLpmKey } from '../lib/abi.js';
import { formatIp } from '../lib/cidr.js';
import { silentLogger } from '../lib/log.js';
import { validatePolicy } from '../lib/policy.js';
import { binding } from '../native/binding.js';
import { Datapath } from './datapath.js';
import { computeDesired, type DesiredState } from './desired.js';
import { bpfObjectPath } from '../lib/package.js';

const GHOST = { name: 'ntghost0', ifindex: 0x7ffffff0, up: true, loopback: false, mtu: 1500, defaultRoute: false, linkType: 'ether', kind: 'veth' };

function withDatapath(fn: (open: () => Datapath, trie: () => string[], slot: (id: number) => Buffer | null) => void): void {
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const root = path.join('/sys/fs/bpf', `netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(root, { mode: 0o700 });
  const runDir = mkdtempSync(path.join(tmpdir(), 'nttest-datapath-'));
  const stateDir = path.join(root, 'state');
  const opened: Datapath[] = [];
  try {
    const open = (): Datapath => {
      const dp = Datapath.open({ stateDir, runDir, objectPath: bpfObjectPath('marker'), attach: 'auto', tcPriority: 1, log: silentLogger() });
      opened.push(dp);
      return dp;
    };
    const read = <T>(map: string, f: (m: ReturnType<typeof b.mapFromPin>) => T): T => {
      const m = b.mapFromPin(path.join(stateDir, 'maps', map));
      try {
        return f(m);
      } finally {
        m.close();
      }
    };
    const trie = (): string[] =>
      read('nt_egress4', (m) => m.keys().map((k) => {
        const d = decodeLpmKey(k);
        return `${formatIp(d.addr)}/${d.prefixLen}`;
      })).sort();
    const slot = (id: number): Buffer | null => read('nt_policies', (m) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(id);
      return m.lookup(k);
    });
    fn(open, trie, slot);
  } finally {
    for (const dp of opened) dp.close();
    rmSync(root, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
  }
}

function desired(dp: Datapath, cidrs: string[]): DesiredState {
  const policies = cidrs.length === 0 ? [] : [validatePolicy({
    apiVersion: 'netoken.io/v1alpha1', kind: 'TokenPolicy', metadata: { name: 'p' },
    spec: {
      token: { mode: 'Static', secretRef: { name: 'p-token' } },
      interfaces: { names: [GHOST.name] },
      egress: { destinations: cidrs.map((cidr) => ({ cidr, ports: [443] })) },
    },
  })];
  const d = computeDesired({ policies, keys: new Map([['p', { current: Buffer.alloc(8, 7) }]]), nodeLabels: {}, interfaces: [GHOST], previousIds: dp.previousIds() });
  d.hooks.clear();
  return d;
}

test('a prefix nested in another with the same rule is written, and stays when the other goes', () => {
  withDatapath((open, trie) => {
    const dp = open();
    dp.apply(desired(dp, ['10.0.0.0/8', '10.1.0.0/16']));
    assert.deepEqual(trie(), ['10.0.0.0/8', '10.1.0.0/16'], 'both prefixes in the trie');
    dp.apply(desired(dp, ['10.1.0.0/16']));
    assert.deepEqual(trie(), ['10.1.0.0/16'], 'the nested prefix stays when the one covering it goes');
  });
});

test('a reconcile that changes nothing writes nothing; a restart picks up what it pinned', () => {
  withDatapath((open, trie, slot) => {
    let dp = open();
    const a = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24'];
    const counts = (d: DesiredState): [number, number] => {
      const r = dp.apply(d);
      return [r.mapWrites, r.mapDeletes];
    };
    assert.deepEqual(counts(desired(dp, a)), [4, 0], 'first apply: the slot and three prefixes written');
    assert.deepEqual(counts(desired(dp, a)), [0, 0], 'the same again: nothing written, nothing deleted');
    dp.close();
    dp = open();
    assert.deepEqual(counts(desired(dp, a)), [0, 0], 'after a restart: what is pinned is reused as it is');
    const b = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.128/25'];
    assert.deepEqual(counts(desired(dp, b)), [1, 1], 'one prefix replaced: one write, one delete');
    assert.deepEqual(trie(), [...b].sort());
    assert.deepEqual(counts(desired(dp, [])), [1, 3], 'no policy: the slot zeroed, every prefix deleted');
    assert.deepEqual(trie(), []);
    assert.ok(slot(1)?.equals(Buffer.alloc(slot(1)?.length ?? 0)), 'slot 1 is zero');
  });
});
