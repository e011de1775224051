/**
 * The data path's map writes against real pinned maps. The policies here name an interface
 * index that does not exist and the desired states carry no hook: only maps are written,
 * nothing is attached anywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  NT_OPT_EXID_DEFAULT,
  NT_OPT_KIND_DEFAULT,
  PortIndexState,
  decodeEgressRule,
  decodeIface,
  decodeLpmKey,
  decodePortIndex,
  encodeCounterOwner,
  portIndexEntries,
} from '../lib/abi.js';
import { formatIp } from '../lib/cidr.js';
import { silentLogger } from '../lib/log.js';
import { validatePolicy } from '../lib/policy.js';
import { binding } from '../native/binding.js';
import { Datapath } from './datapath.js';
import { EncodingMemo, computeDesired, type DesiredState } from './desired.js';
import { layoutDir } from './layout.js';
import { readEntries } from './map-sync.js';
import { wholePortIndex } from '../../test/lib/port-index.js';
import { bpfObjectPath } from '../lib/package.js';
import { fixture } from '../../test/lib/native.js';
import { recordingLogger } from '../../test/lib/log.js';
import { NO_PORT_INDEX_COMMIT, objectsAt } from '../../test/lib/layout1.js';
import { TCP_SYN, buildFrame, tokenOption } from '../lib/packet.js';
import { XdpAction } from '../native/bpf.js';

const GHOST = {
  name: 'ntghost0',
  ifindex: 0x7ffffff0,
  up: true,
  loopback: false,
  mtu: 1500,
  defaultRoute: false,
  linkType: 'ether',
  kind: 'veth',
};

function withDatapath(
  fn: (open: () => Datapath, trie: () => string[], slot: (id: number) => Buffer | null, stateDir: string) => void,
): void {
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const root = path.join('/sys/fs/bpf', `netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(root, { mode: 0o700 });
  const runDir = mkdtempSync(path.join(tmpdir(), 'nttest-datapath-'));
  const stateDir = path.join(root, 'state');
  const opened: Datapath[] = [];
  try {
    const open = (): Datapath => {
      const dp = Datapath.open({
        stateDir,
        runDir,
        objectPath: bpfObjectPath('marker'),
        attach: 'auto',
        tcPriority: 1,
        log: silentLogger(),
      });
      opened.push(dp);
      return dp;
    };
    const read = <T>(map: string, f: (m: ReturnType<typeof b.mapFromPin>) => T): T => {
      const m = b.mapFromPin(path.join(layoutDir(stateDir), map));
      try {
        return f(m);
      } finally {
        m.close();
      }
    };
    const trie = (): string[] =>
      read('nt_egress4', (m) =>
        m.keys().map((k) => {
          const d = decodeLpmKey(k);
          return `${formatIp(d.addr)}/${d.prefixLen}`;
        }),
      ).sort();
    const slot = (id: number): Buffer | null =>
      read('nt_policies', (m) => {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(id);
        return m.lookup(k);
      });
    fn(open, trie, slot, stateDir);
  } finally {
    for (const dp of opened) dp.close();
    rmSync(root, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** The desired state of policy "p" on the ghost interface with `spec` (its token and interfaces added), or of no policy; no hooks. */
function desiredOf(dp: Datapath, spec: Record<string, unknown> | null, iface = GHOST, memo?: EncodingMemo): DesiredState {
  const policies =
    spec === null
      ? []
      : [
          validatePolicy({
            apiVersion: 'netoken.io/v1alpha1',
            kind: 'TokenPolicy',
            metadata: { name: 'p' },
            spec: { token: { mode: 'Static', secretRef: { name: 'p-token' } }, interfaces: { names: [iface.name] }, ...spec },
          }),
        ];
  const d = computeDesired({
    policies,
    keys: new Map([['p', { current: Buffer.alloc(8, 7) }]]),
    nodeLabels: {},
    interfaces: [iface],
    previousIds: dp.previousIds(),
    memo,
  });
  d.hooks.clear();
  return d;
}

function desired(dp: Datapath, cidrs: string[], memo?: EncodingMemo): DesiredState {
  const spec = cidrs.length === 0 ? null : { egress: { destinations: cidrs.map((cidr) => ({ cidr, ports: [443] })) } };
  return desiredOf(dp, spec, GHOST, memo);
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

test('the port index says what the port rules say, from the first apply on; a restart rewrites nothing', () => {
  withDatapath((open, _trie, _slot, stateDir) => {
    const ingress = (dp: Datapath, action: 'Enforce' | 'Monitor', ports: number[]): DesiredState =>
      desiredOf(dp, { ingress: { action, ports } });
    const pinned = (map: string): Map<string, string> => {
      const m = binding().mapFromPin(path.join(layoutDir(stateDir), map));
      try {
        const entries = map === 'nt_port_index' ? wholePortIndex(m) : readEntries(m);
        return new Map([...entries].map(([hex, [, v]]) => [hex, v.toString('hex')]));
      } finally {
        m.close();
      }
    };
    const expected = (): Map<string, string> =>
      new Map(
        [
          ...portIndexEntries([...pinned('nt_ingress_ports')].map(([k, v]) => [Buffer.from(k, 'hex'), Buffer.from(v, 'hex')])),
        ].map(([hex, [, v]]) => [hex, v.toString('hex')]),
      );
    let dp = open();
    dp.apply(ingress(dp, 'Enforce', [443, 8443]));
    const index = pinned('nt_port_index');
    assert.deepEqual(
      [...index.values()].map((v) => decodePortIndex(Buffer.from(v, 'hex')).state).sort(),
      [PortIndexState.None, PortIndexState.One, PortIndexState.One],
      'both ports indexed under the one interface; no interface protects every port',
    );
    assert.deepEqual(index, expected(), 'each entry holds the rule nt_ingress_ports holds');
    dp.apply(ingress(dp, 'Monitor', [443]));
    assert.deepEqual(pinned('nt_port_index'), expected(), 'after a change of action and ports');
    dp.close();
    dp = open();
    assert.equal(dp.apply(ingress(dp, 'Monitor', [443])).mapWrites, 0, 'after a restart: nothing written');
    dp.apply(ingress(dp, 'Monitor', []));
    assert.deepEqual(pinned('nt_port_index'), expected(), 'every port');
  });
});

test('over the pins of a verifier without the port index: the maps are reused, the index added and filled, and both programs answer alike', () => {
  const old = objectsAt(NO_PORT_INDEX_COMMIT);
  withDatapath((open, _trie, _slot, stateDir) => {
    const b = binding();
    const dir = layoutDir(stateDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // What an agent of that commit left: its verifier's maps pinned (same layout, no nt_port_index).
    const oldObj = b.openObject(old.verifier, { pinRoot: dir });
    const oldProg = oldObj.program('nt_verify_xdp');
    const oldPorts = oldObj.map('nt_ingress_ports');
    let newProg: ReturnType<typeof b.programFromId> | null = null;
    try {
      assert.ok(!existsSync(path.join(dir, 'nt_port_index')), 'the older verifier pins no port index');
      const dp = open();
      // Rules on the device test runs arrive on (loopback, ifindex 1), under another name.
      dp.apply(desiredOf(dp, { ingress: { action: 'Enforce', ports: [443] } }, { ...GHOST, name: 'ntghost1', ifindex: 1 }));
      const pinnedPorts = b.mapFromPin(path.join(dir, 'nt_ingress_ports'));
      const index = b.mapFromPin(path.join(dir, 'nt_port_index'));
      try {
        assert.equal(pinnedPorts.info.id, oldPorts.info.id, 'the pinned port rules are the same map, reused');
        assert.equal(oldPorts.keys().length, 2, 'which holds the rule for 443 and the enforcing rule');
        const k = Buffer.alloc(4);
        k.writeUInt32LE(443);
        assert.equal(
          decodePortIndex(index.lookup(k)!).state,
          PortIndexState.One,
          'the index is added and says where 443 is protected',
        );
      } finally {
        pinnedPorts.close();
        index.close();
      }
      newProg = b.programFromId(dp.verifierProgramIds!.xdp);
      const syn = (dport: number, options: Buffer): Buffer =>
        buildFrame({ src: '192.0.2.10', dst: '203.0.113.7', tcp: { sport: 40000, dport, seq: 1, flags: TCP_SYN, options } });
      const cases: [string, Buffer, number][] = [
        ['unmarked SYN to 443', syn(443, Buffer.alloc(0)), XdpAction.DROP],
        [
          'SYN to 443 with the token',
          syn(443, tokenOption(NT_OPT_KIND_DEFAULT, NT_OPT_EXID_DEFAULT, Buffer.alloc(8, 7))),
          XdpAction.PASS,
        ],
        ['unmarked SYN to 80', syn(80, Buffer.alloc(0)), XdpAction.PASS],
      ];
      for (const [what, frame, want] of cases) {
        assert.equal(
          oldProg.testRun({ data: frame }).retval,
          want,
          `${what}: the older program, on the hooks until they are swapped`,
        );
        assert.equal(newProg.testRun({ data: frame }).retval, want, `${what}: this agent's program`);
      }
    } finally {
      newProg?.close();
      oldPorts.close();
      oldProg.close();
      oldObj.close();
    }
  });
});

test('every rule counts in the slot of its interface and policy, the interface has its own, and slots go with the rules', () => {
  withDatapath((open, _trie, _slot, stateDir) => {
    const dp = open();
    const d = desired(dp, ['192.0.2.0/24', '2001:db8::/32']);
    dp.apply(d);
    const id = d.ids.get('p')!;
    const b = binding();
    const dir = layoutDir(stateDir);
    const owners = b.mapFromPin(path.join(dir, 'nt_counter_slots'));
    const ifaces = b.mapFromPin(path.join(dir, 'nt_ifaces'));
    const e4 = b.mapFromPin(path.join(dir, 'nt_egress4'));
    try {
      const slotOf = (ifindex: number, policyId: number): number => {
        for (let s = 1; s < 64; s++) {
          const v = owners.lookup(u32(s));
          if (v && v.equals(encodeCounterOwner(ifindex, policyId))) return s;
        }
        return 0;
      };
      const own = slotOf(GHOST.ifindex, 0);
      const pol = slotOf(GHOST.ifindex, id);
      assert.ok(own > 0 && pol > 0 && own !== pol, `slots: interface ${own}, policy ${pol}`);
      assert.deepEqual(
        decodeIface(ifaces.lookup(u32(GHOST.ifindex))!),
        { slot: own },
        "nt_ifaces names the interface's own slot",
      );
      for (const k of e4.keys())
        assert.equal(decodeEgressRule(e4.lookup(k)!).slot, pol, 'the rule carries the (interface, policy) slot');
      dp.apply(desired(dp, []));
      assert.equal(slotOf(GHOST.ifindex, id), 0, 'no rule left: the slot is free');
      assert.equal(slotOf(GHOST.ifindex, 0), 0, 'no rule and no hook on the interface: its slot is free');
      assert.equal(ifaces.lookup(u32(GHOST.ifindex)), null, 'and it is gone from nt_ifaces');
    } finally {
      for (const m of [owners, ifaces, e4]) m.close();
    }
  });
});

test('where the kernel refuses the marker, the agent loads its build for kernels before 6.2 beside it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-objects-'));
  const root = path.join('/sys/fs/bpf', `netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(root, { mode: 0o700 });
  const runDir = mkdtempSync(path.join(tmpdir(), 'nttest-datapath-'));
  const { log, lines } = recordingLogger('info');
  let dp: Datapath | undefined;
  try {
    // A "marker" the kernel refuses (a test program that reads out of bounds), and the real compat build beside it.
    copyFileSync(fixture('rejected'), path.join(dir, 'marker.bpf.o'));
    copyFileSync(bpfObjectPath('marker_compat'), path.join(dir, 'marker_compat.bpf.o'));
    dp = Datapath.open({
      stateDir: path.join(root, 'state'),
      runDir,
      objectPath: path.join(dir, 'marker.bpf.o'),
      attach: 'auto',
      tcPriority: 1,
      log,
    });
    const p = binding().programFromId(dp.programId);
    assert.equal(p.info.name, 'nt_mark_egress', 'the marker program of the compat build');
    p.close();
    assert.ok(
      lines.some((l) => l.includes('marker_compat.bpf.o') && l.includes('before 6.2')),
      `the log says which build was loaded: ${lines.join('')}`,
    );
  } finally {
    dp?.close();
    rmSync(root, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Every entry of the pinned maps the rules live in, as text: what a fresh apply is compared with. */
function content(stateDir: string): Record<string, string[]> {
  const b = binding();
  const out: Record<string, string[]> = {};
  for (const name of ['nt_egress4', 'nt_egress6', 'nt_policies', 'nt_ifaces', 'nt_counter_slots']) {
    const m = b.mapFromPin(path.join(layoutDir(stateDir), name));
    try {
      out[name] = m
        .keys()
        .map((k) => `${k.toString('hex')}=${m.lookup(k)?.toString('hex')}`)
        .sort();
    } finally {
      m.close();
    }
  }
  return out;
}

/** The maps a fresh data path (new pins, no earlier state) writes for `cidrs`. */
function freshContent(cidrs: string[]): Record<string, string[]> {
  let out: Record<string, string[]> = {};
  withDatapath((open, _trie, _slot, stateDir) => {
    const dp = open();
    dp.apply(desired(dp, cidrs));
    out = content(stateDir);
  });
  return out;
}

test('an edit of one prefix among many writes only it, and the maps end as a fresh apply of the new state leaves them', () => {
  const many = Array.from({ length: 3000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  withDatapath((open, trie, _slot, stateDir) => {
    const dp = open();
    const memo = new EncodingMemo();
    const replaced = many.map((c, i) => (i === 1000 ? '172.16.0.0/12' : c));
    const removed = replaced.filter((_, i) => i !== 2000);
    const added = [...removed, '2001:db8::/32'];
    const edits: [string, string[], [number, number]][] = [
      ['first apply', many, [3001, 0]],
      ['one prefix replaced', replaced, [1, 1]],
      ['one prefix removed', removed, [0, 1]],
      ['an IPv6 prefix added', added, [1, 0]],
      ['nothing changed', added, [0, 0]],
      ['back to the first', many, [2, 2]],
    ];
    for (const [what, cidrs, counts] of edits) {
      const r = dp.apply(desired(dp, cidrs, memo));
      assert.deepEqual([r.mapWrites, r.mapDeletes], counts, `${what}: writes and deletes`);
      assert.deepEqual(content(stateDir), freshContent(cidrs), `${what}: the maps hold what a fresh apply writes`);
      if (what === 'one prefix removed') {
        const t = trie();
        assert.ok(!t.includes(many[2000]!), `${many[2000]} is gone from the trie`);
        assert.ok(t.includes('172.16.0.0/12') && !t.includes(many[1000]!), 'the replaced prefix is the new one');
        assert.equal(t.length, 2999);
      }
    }
  });
});

test('a restart reads the maps again: entries changed behind the agent are put right, and edits are cheap again after', () => {
  const many = Array.from({ length: 2000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  withDatapath((open, trie, _slot, stateDir) => {
    let dp = open();
    dp.apply(desired(dp, many, new EncodingMemo()));
    // Something else deletes one rule and adds one of its own.
    const e4 = binding().mapFromPin(path.join(layoutDir(stateDir), 'nt_egress4'));
    const [first, second] = e4.keys();
    const value = e4.lookup(first!)!;
    e4.delete(second!);
    const stray = Buffer.from(first!);
    stray.writeUInt8(192, 8);
    e4.update(stray, value);
    e4.close();
    assert.equal(trie().length, 2000, 'one rule gone, one stray');
    dp.close();
    dp = open();
    const memo = new EncodingMemo();
    const r = dp.apply(desired(dp, many, memo));
    assert.deepEqual([r.mapWrites, r.mapDeletes], [1, 1], 'the missing rule written, the stray deleted');
    assert.deepEqual(content(stateDir), freshContent(many), 'the maps hold what a fresh apply writes');
    const edited = many.map((c, i) => (i === 5 ? '192.0.2.0/24' : c));
    const r2 = dp.apply(desired(dp, edited, memo));
    assert.deepEqual([r2.mapWrites, r2.mapDeletes], [1, 1], 'an edit after the restart: one write, one delete');
    assert.deepEqual(content(stateDir), freshContent(edited), 'and the maps hold what a fresh apply writes');
  });
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
