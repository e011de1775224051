/**
 * The ingress verifier (bpf/verifier.bpf.c) driven with BPF_PROG_TEST_RUN on crafted
 * frames, through both entry points (XDP and tc): verdicts and exact counter deltas for
 * static and keyed tokens, every way a SYN can fail, exemptions, Monitor vs Enforce, the
 * replay limit, and the marker's output fed to the verifier.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { binding, type NativeMap, type NativeObject, type NativeProgram } from '../../src/native/binding.js';
import {
  BindBit,
  COUNTERS,
  decodeIngressRule,
  encodeClock,
  encodeEgressRule,
  encodeEnforcingKey,
  encodeExemptValue,
  encodeIngressRule,
  encodeLpmKey,
  encodePolicy,
  encodePortKey,
  encodeSrcKey,
  IngressActionCode,
  IngressFlag,
  NT_OPT_EXID_DEFAULT as EXID,
  PortIndexState,
  decodePortIndex,
  portIndexEntries,
  NT_OPT_KIND_DEFAULT as KIND,
  TokenModeCode,
} from '../../src/lib/abi.js';
import { CounterSlots } from '../../src/agent/counters.js';
import { type Entries, raiseEgressGeneration, syncPortIndex } from '../../src/agent/map-sync.js';
import { parseCidr } from '../../src/lib/cidr.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import {
  buildFrame,
  findTokenOption,
  parseFrame,
  tokenOption,
  ETH_P_ARP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  type FrameSpec,
} from '../../src/lib/packet.js';
import { measureClock } from '../../src/agent/clock.js';
import { computeDesired } from '../../src/agent/desired.js';
import type { HostInterface } from '../../src/agent/interfaces.js';
import { validatePolicy } from '../../src/lib/policy.js';
import { TcAction, XdpAction } from '../../src/native/bpf.js';
import { sleep } from '../../src/lib/wait.js';
import { PACKAGE_ROOT, bpfObjectPath } from '../../src/lib/package.js';
import { KEYED_KEY as KEY, KEYED_KEY_PREVIOUS as KEY_OLD } from '../lib/keys.js';

const VERIFIER_OBJ = bpfObjectPath('verifier');
const MARKER_OBJ = bpfObjectPath('marker');

/** test_run's device without a ctx: the loopback device of the caller's namespace. */
const LO = 1;

const TOKEN = Buffer.from('a1b2c3d4e5f60718', 'hex');
const TOKEN_OLD = Buffer.from('0102030405060708', 'hex');
/** Long epochs: a test run never straddles two, and checkEpoch() retries if one does. */
const EPOCH_SECONDS = 3600;
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

execFileSync('make', ['-s', '-C', path.join(PACKAGE_ROOT, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });

type Counter = (typeof COUNTERS)[number];
type Verdict = 'pass' | 'drop';
type Entry = 'xdp' | 'tc';

interface PolicyOpts {
  mode?: TokenModeCode;
  token?: Buffer;
  previous?: Buffer;
  bind?: number;
  kind?: number;
  exid?: number;
  epochSeconds?: number;
  skewSeconds?: number;
}

const open: Verifier[] = [];
after(() => {
  for (const v of open.splice(0)) v.close();
});

/** A loaded verifier and marker with private pinned maps (shared by both, as under the agent). */
class Verifier {
  readonly pinDir: string;
  readonly obj: NativeObject;
  readonly progs: Record<Entry, NativeProgram>;
  private readonly probe: NativeProgram;
  readonly maps: Record<'policies' | 'clock' | 'ports' | 'portIndex' | 'exempt4' | 'exempt6' | 'replay', NativeMap>;
  private readonly marker: { obj: NativeObject; prog: NativeProgram };
  private readonly slots: CounterSlots;
  /** port rules written, by hex key, and the exempt-source families of each policy: a rule carries its policy's */
  private readonly rules = new Map<string, [Buffer, Buffer]>();
  private readonly exemptFlags = new Map<number, number>();
  /** nt_ingress_ports and nt_port_index as written (the rules with their slots), for the index's upkeep */
  private readonly written: { ports: Entries; index: Entries } = { ports: new Map(), index: new Map() };
  /** whether nt_port_index is kept as the agent keeps it; without it the verifier asks nt_ingress_ports alone */
  private readonly indexed: boolean;

  /** `index: false`: leave nt_port_index empty, as on pins an agent without it left. */
  constructor(opts: { clock?: boolean; index?: boolean } = {}) {
    this.indexed = opts.index ?? true;
    const b = binding();
    if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
    this.pinDir = `/sys/fs/bpf/netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`;
    mkdirSync(this.pinDir, { mode: 0o700 });
    open.push(this);
    this.obj = b.openObject(VERIFIER_OBJ, { pinRoot: this.pinDir });
    this.progs = { xdp: this.obj.program('nt_verify_xdp'), tc: this.obj.program('nt_verify_tc') };
    const marker = b.openObject(MARKER_OBJ, { pinRoot: this.pinDir });
    this.marker = { obj: marker, prog: marker.program('nt_mark_egress') };
    this.probe = marker.program('nt_clock_probe');
    this.maps = {
      policies: this.obj.map('nt_policies'),
      clock: this.obj.map('nt_clock'),
      ports: this.obj.map('nt_ingress_ports'),
      portIndex: this.obj.map('nt_port_index'),
      exempt4: this.obj.map('nt_exempt4'),
      exempt6: this.obj.map('nt_exempt6'),
      replay: this.obj.map('nt_replay'),
    };
    this.slots = CounterSlots.of(this.obj);
    // Loopback is hooked: its own counters (unreadable frames) exist with or without rules.
    this.slots.slot(LO, 0);
    if (opts.clock ?? true) this.clockAt(0);
  }

  /**
   * Write the wall clock as the agent does, shifted so that the programs' unix time is
   * `shiftSeconds` ahead of this process's (negative: behind).
   */
  clockAt(shiftSeconds: number): this {
    const r = measureClock(this.probe);
    const shift = BigInt(Math.round(shiftSeconds * 1000)) * 1_000_000n;
    this.maps.clock.update(Buffer.alloc(4), encodeClock(r.taiOffsetNs - shift, r.bootOffsetNs + shift));
    return this;
  }

  policy(id: number, o: PolicyOpts = {}): this {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(id);
    const mode = o.mode ?? TokenModeCode.Static;
    const keyed = mode === TokenModeCode.Keyed;
    this.maps.policies.update(
      key,
      encodePolicy({
        mode,
        kind: o.kind ?? KIND,
        exid: o.exid ?? EXID,
        epochSeconds: o.epochSeconds ?? (keyed ? EPOCH_SECONDS : 0),
        skewSeconds: o.skewSeconds ?? 0,
        bind: o.bind ?? (keyed ? BIND_ALL : 0),
        current: o.token ?? (keyed ? KEY : TOKEN),
        ...(o.previous ? { previous: o.previous } : {}),
      }),
    );
    return this;
  }

  /**
   * Write a port rule (an nt_ingress_ports key and value) as the agent does: with the
   * counter slot of its interface and policy, and its policy's exempt-source families.
   */
  portRule(key: Buffer, value: Buffer): this {
    const r = decodeIngressRule(value);
    const slot = this.slots.slot(key.readUInt32LE(0), r.policyId);
    const v = encodeIngressRule(r.policyId, r.action, {
      replayLimit: r.replayLimit,
      slot,
      flags: r.flags | (this.exemptFlags.get(r.policyId) ?? 0),
    });
    const hex = key.toString('hex');
    const ports: Entries = new Map(this.written.ports).set(hex, [key, v]);
    // Around the rule's write as the agent does it (datapath.ts).
    const index = portIndexEntries(ports.values());
    if (this.indexed) syncPortIndex(this.maps.portIndex, this.written.index, index, 'before');
    this.maps.ports.update(key, v);
    this.written.ports = ports;
    if (this.indexed) syncPortIndex(this.maps.portIndex, this.written.index, index, 'after');
    this.rules.set(hex, [key, value]);
    return this;
  }

  protect(port: number, policyId: number, action = IngressActionCode.Enforce, replayLimit = 0, ifindex = LO): this {
    return this.portRule(encodePortKey(ifindex, port), encodeIngressRule(policyId, action, { replayLimit }));
  }

  /** Mark `ifindex` as one where policy `policyId` enforces (what the agent writes for Enforce policies). */
  enforcing(policyId: number, ifindex = LO): this {
    return this.portRule(encodeEnforcingKey(ifindex), encodeIngressRule(policyId, IngressActionCode.Enforce));
  }

  exempt(policyId: number, cidr: string): this {
    const c = parseCidr(cidr);
    this.maps[c.family === 4 ? 'exempt4' : 'exempt6'].update(encodeSrcKey(policyId, c), encodeExemptValue());
    this.exemptFlags.set(
      policyId,
      (this.exemptFlags.get(policyId) ?? 0) | (c.family === 4 ? IngressFlag.Exempt4 : IngressFlag.Exempt6),
    );
    // The policy's rules now say it has exemptions of that family.
    for (const [key, value] of [...this.rules.values()])
      if (decodeIngressRule(value).policyId === policyId) this.portRule(key, value);
    return this;
  }

  /** The marker on the same pins, marking every destination on loopback with `policyId`. */
  markWith(policyId: number): NativeProgram {
    const e4 = this.marker.obj.map('nt_egress4');
    const e6 = this.marker.obj.map('nt_egress6');
    const config = this.marker.obj.map('nt_config');
    const slot = this.slots.slot(LO, policyId);
    e4.update(encodeLpmKey(LO, parseCidr('0.0.0.0/0')), encodeEgressRule(policyId, [], slot));
    e6.update(encodeLpmKey(LO, parseCidr('::/0')), encodeEgressRule(policyId, [], slot));
    raiseEgressGeneration(config);
    for (const m of [e4, e6, config]) m.close();
    return this.marker.prog;
  }

  counters(): Map<string, bigint> {
    const out = new Map<string, bigint>();
    for (const r of this.slots.rows()) out.set(`${r.ifindex}/${r.policyId}/${r.counter}`, r.value);
    return out;
  }

  /** Run `frame` through one entry point: its verdict, and the counters it changed. */
  run(entry: Entry, frame: Buffer): { verdict: Verdict; changed: Record<string, number> } {
    const before = this.counters();
    const r = this.progs[entry].testRun({ data: frame });
    const after = this.counters();
    const changed: Record<string, number> = {};
    for (const [k, v] of after) {
      const n = Number(v - (before.get(k) ?? 0n));
      if (n !== 0) changed[k] = n;
    }
    const pass = entry === 'xdp' ? XdpAction.PASS : TcAction.UNSPEC;
    const drop = entry === 'xdp' ? XdpAction.DROP : TcAction.SHOT;
    assert.ok(
      r.retval === pass || r.retval === drop,
      `${entry}: return value ${r.retval} is neither pass (${pass}) nor drop (${drop})`,
    );
    assert.ok(r.data.equals(frame), `${entry}: the verifier changed the packet`);
    return { verdict: r.retval === pass ? 'pass' : 'drop', changed };
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
    this.slots.close();
    for (const p of [...Object.values(this.progs), this.probe]) p.close();
    this.obj.close();
    this.marker.prog.close();
    this.marker.obj.close();
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}

/** Assert both entry points give `want` and change exactly the counters `want` lists ("ifindex/policy/name" -> delta). */
function expectCounts(v: Verifier, frame: Buffer, want: Verdict, counts: Record<string, number>, what = ''): void {
  for (const entry of ['xdp', 'tc'] as const) {
    const got = v.run(entry, frame);
    assert.equal(got.verdict, want, `${entry}${what ? ` (${what})` : ''}: verdict`);
    assert.deepEqual(got.changed, counts, `${entry}${what ? ` (${what})` : ''}: counters`);
  }
}

/**
 * Assert both entry points give `want` and count exactly `counters` (names under
 * policy `policyId` on loopback; a name may carry its own "ifindex/policy/" prefix).
 */
function expect(v: Verifier, frame: Buffer, want: Verdict, counters: Counter[], policyId = 1, what = ''): void {
  const wantCounts: Record<string, number> = {};
  for (const c of counters) {
    const k = `${LO}/${policyId}/${c}`;
    wantCounts[k] = (wantCounts[k] ?? 0) + 1;
  }
  for (const entry of ['xdp', 'tc'] as const) {
    const got = v.run(entry, frame);
    assert.equal(got.verdict, want, `${entry}${what ? ` (${what})` : ''}: verdict`);
    assert.deepEqual(got.changed, wantCounts, `${entry}${what ? ` (${what})` : ''}: counters`);
  }
}

const v4: FrameSpec = {
  src: '192.0.2.10',
  dst: '203.0.113.7',
  tcp: { sport: 40000, dport: 443, seq: 0x01020304, flags: TCP_SYN, options: LINUX_SYN_OPTIONS },
};
const v6: FrameSpec = {
  src: '2001:db8::10',
  dst: '2001:db8:1::7',
  tcp: { sport: 40001, dport: 443, seq: 0xfeedf00d, flags: TCP_SYN, options: LINUX_SYN_OPTIONS },
};

/** `spec` with `extra` appended to its TCP options. */
function withOption(spec: FrameSpec, extra: Buffer): Buffer {
  return buildFrame({ ...spec, tcp: { ...spec.tcp!, options: Buffer.concat([spec.tcp!.options ?? Buffer.alloc(0), extra]) } });
}

function flowOf(spec: FrameSpec): { src: string; dst: string; sport: number; dport: number; seq: number } {
  return { src: spec.src!, dst: spec.dst!, sport: spec.tcp!.sport, dport: spec.tcp!.dport, seq: spec.tcp!.seq ?? 0 };
}

/** A keyed SYN for `spec` with the value for `epoch` under `key`. */
function keyedSyn(spec: FrameSpec, key: Buffer, epoch: bigint, bind = BIND_ALL): Buffer {
  return withOption(spec, tokenOption(KIND, EXID, keyedToken(key, flowOf(spec), bind, epoch)));
}

/** Run `fn` with the current epoch; again if an epoch boundary passed meanwhile. */
function checkEpoch(fn: (epoch: bigint) => void): void {
  for (let i = 0; i < 3; i++) {
    const e = epochAt(Date.now(), EPOCH_SECONDS);
    try {
      fn(e);
      return;
    } catch (err) {
      if (epochAt(Date.now(), EPOCH_SECONDS) === e) throw err;
    }
  }
}

/**
 * Set the verifier's clock to `into` seconds into an epoch (of EPOCH_SECONDS) and return
 * that epoch. The programs' clock runs on; a check takes milliseconds.
 */
function pinEpoch(v: Verifier, into: number): bigint {
  const now = Date.now() / 1000;
  const epoch = BigInt(Math.floor(now / EPOCH_SECONDS)) + 10n;
  v.clockAt(Number(epoch) * EPOCH_SECONDS + into - now);
  return epoch;
}

// ---------------------------------------------------------------------------------------
// What is not verified

test('non-SYN traffic, SYN-ACKs and SYNs to unprotected ports pass uncounted', () => {
  const v = new Verifier().policy(1).protect(443, 1);
  const frames = [
    buildFrame({ ...v4, tcp: { ...v4.tcp!, flags: TCP_ACK } }),
    buildFrame({ ...v4, tcp: { ...v4.tcp!, flags: TCP_SYN | TCP_ACK } }),
    buildFrame({ ...v6, tcp: { ...v6.tcp!, flags: TCP_RST } }),
    buildFrame({ src: '192.0.2.1', dst: '203.0.113.7', protocol: IPPROTO_UDP, payload: Buffer.alloc(20) }),
    buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28, 1) }),
    buildFrame({ ...v4, tcp: { ...v4.tcp!, dport: 80 } }),
    buildFrame({ ...v6, tcp: { ...v6.tcp!, dport: 8443 } }),
    buildFrame({ ...v4, vlan: 7, tcp: { ...v4.tcp!, dport: 22 } }),
  ];
  for (const f of frames) expect(v, f, 'pass', []);
});

test('a rule pointing at an empty policy slot verifies nothing', () => {
  const v = new Verifier().protect(443, 5);
  expect(v, buildFrame(v4), 'pass', []);
});

test('rules are per interface: a port protected on ifindex 7 is not protected on loopback', () => {
  const v = new Verifier().policy(1).protect(443, 1, IngressActionCode.Enforce, 0, 7);
  expect(v, buildFrame(v4), 'pass', []);
});

test('the port index answers as the port rules alone do: one interface, several, every port, a rule changed', () => {
  const OTHER = 7;
  const scenarios: {
    what: string;
    setup: (v: Verifier) => void;
    want: Record<number, Verdict>;
    index: Record<number, PortIndexState>;
  }[] = [
    {
      what: '443 on loopback only',
      setup: (v) => v.protect(443, 1),
      want: { 443: 'drop', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.None },
    },
    {
      what: '443 on loopback and on another interface',
      setup: (v) => v.protect(443, 1).protect(443, 2, IngressActionCode.Enforce, 0, OTHER),
      want: { 443: 'drop', 80: 'pass' },
      index: { 443: PortIndexState.Hash, 0: PortIndexState.None },
    },
    {
      what: '443 on another interface, every port on loopback',
      setup: (v) => v.protect(443, 2, IngressActionCode.Enforce, 0, OTHER).protect(0, 1, IngressActionCode.Monitor),
      want: { 443: 'pass', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.One },
    },
    {
      what: 'every port on loopback and on another interface, 443 Enforce on loopback',
      setup: (v) => v.protect(0, 2, IngressActionCode.Monitor).protect(0, 2, IngressActionCode.Enforce, 0, OTHER).protect(443, 1),
      want: { 443: 'drop', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.Hash },
    },
    {
      what: '443 on another interface only',
      setup: (v) => v.protect(443, 1, IngressActionCode.Enforce, 0, OTHER),
      want: { 443: 'pass', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.None },
    },
    {
      what: '443 on loopback, Monitor then Enforce',
      setup: (v) => v.protect(443, 1, IngressActionCode.Monitor).protect(443, 1),
      want: { 443: 'drop', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.None },
    },
    {
      what: '443 on loopback, Enforce then Monitor',
      setup: (v) => v.protect(443, 1).protect(443, 1, IngressActionCode.Monitor),
      want: { 443: 'pass', 80: 'pass' },
      index: { 443: PortIndexState.One, 0: PortIndexState.None },
    },
  ];
  const key = (port: number): Buffer => {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(port);
    return k;
  };
  for (const sc of scenarios) {
    const indexed = new Verifier().policy(1).policy(2);
    const plain = new Verifier({ index: false }).policy(1).policy(2);
    sc.setup(indexed);
    sc.setup(plain);
    for (const [port, state] of Object.entries(sc.index)) {
      const got = decodePortIndex(indexed.maps.portIndex.lookup(key(Number(port)))!).state;
      assert.equal(got, state, `${sc.what}: nt_port_index[${port}]`);
    }
    for (const [port, verdict] of Object.entries(sc.want)) {
      for (const spec of [v4, v6]) {
        const frame = buildFrame({ ...spec, tcp: { ...spec.tcp!, dport: Number(port) } });
        for (const entry of ['xdp', 'tc'] as const) {
          const a = indexed.run(entry, frame);
          const b = plain.run(entry, frame);
          const what = `${sc.what}, ${entry}, IPv${spec === v4 ? 4 : 6} SYN to ${port}`;
          assert.equal(a.verdict, verdict, `${what}: verdict`);
          assert.deepEqual(a, b, `${what}: the same verdict and counters without the index`);
        }
      }
    }
  }
});

// ---------------------------------------------------------------------------------------
// Static tokens

test('static: the token and the previous token are valid; anything else is invalid, missing or malformed', () => {
  const v = new Verifier().policy(1, { previous: TOKEN_OLD }).protect(443, 1);
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN)), 'pass', ['verify_valid'], 1, 'current token');
  expect(v, withOption(v6, tokenOption(KIND, EXID, TOKEN)), 'pass', ['verify_valid'], 1, 'IPv6');
  expect(
    v,
    withOption({ ...v4, vlan: [{ id: 5, tpid: 0x88a8 }, { id: 9 }] }, tokenOption(KIND, EXID, TOKEN)),
    'pass',
    ['verify_valid'],
    1,
    'QinQ',
  );
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN_OLD)), 'pass', ['verify_valid'], 1, 'previous token');
  expect(
    v,
    withOption(v4, tokenOption(KIND, EXID, Buffer.alloc(8, 0x55))),
    'drop',
    ['verify_invalid', 'verify_dropped'],
    1,
    'wrong token',
  );
  expect(v, buildFrame(v4), 'drop', ['verify_missing', 'verify_dropped'], 1, 'no option');
  expect(
    v,
    buildFrame({ ...v4, tcp: { ...v4.tcp!, options: Buffer.alloc(0) } }),
    'drop',
    ['verify_missing', 'verify_dropped'],
    1,
    'no options at all',
  );
  expect(v, withOption(v4, tokenOption(KIND, 0x1234, TOKEN)), 'drop', ['verify_missing', 'verify_dropped'], 1, 'another ExID');
  expect(v, withOption(v4, tokenOption(254, EXID, TOKEN)), 'drop', ['verify_missing', 'verify_dropped'], 1, 'another kind');
  // Our option after an EOL does not count: the stack stops reading there too.
  expect(
    v,
    withOption({ ...v4, tcp: { ...v4.tcp!, options: Buffer.from('020405b400000000', 'hex') } }, tokenOption(KIND, EXID, TOKEN)),
    'drop',
    ['verify_missing', 'verify_dropped'],
    1,
    'after EOL',
  );
  // Our kind and ExID with the wrong length: ours, but not a value we accept.
  expect(
    v,
    withOption(v4, Buffer.from([KIND, 10, 0x4e, 0x54, 1, 2, 3, 4, 5, 6, 1, 1])),
    'drop',
    ['verify_invalid', 'verify_dropped'],
    1,
    'length 10',
  );
  expect(v, withOption(v4, Buffer.from('0101fd01', 'hex')), 'drop', ['verify_malformed', 'verify_dropped'], 1, 'option length 1');
  expect(v, withOption(v4, Buffer.from('020005b4', 'hex')), 'drop', ['verify_malformed', 'verify_dropped'], 1, 'option length 0');
  expect(v, buildFrame({ ...v4, tcp: { ...v4.tcp!, doff: 4 } }), 'drop', ['verify_malformed', 'verify_dropped'], 1, 'doff 4');
  // doff says 15 words, the frame ends after the 20 option bytes: truncated.
  expect(
    v,
    buildFrame({ ...v4, tcp: { ...v4.tcp!, doff: 15 } }),
    'drop',
    ['verify_malformed', 'verify_dropped'],
    1,
    'doff past the end',
  );
});

test('static: without a previous token, the old one is invalid', () => {
  const v = new Verifier().policy(1).protect(443, 1);
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN_OLD)), 'drop', ['verify_invalid', 'verify_dropped']);
});

test("the policy's own kind and ExID are what the verifier looks for", () => {
  const v = new Verifier().policy(2, { kind: 254, exid: 0xbeef }).protect(443, 2);
  expect(v, withOption(v4, tokenOption(254, 0xbeef, TOKEN)), 'pass', ['verify_valid'], 2);
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN)), 'drop', ['verify_missing', 'verify_dropped'], 2);
});

// ---------------------------------------------------------------------------------------
// Keyed tokens

test('keyed: the current epoch is valid with the current or the previous key; others are not, away from an epoch boundary', () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed, previous: KEY_OLD, skewSeconds: 5 }).protect(443, 1);
  // 30 s into an epoch: 25 s from either boundary, more than the skew.
  const e = pinEpoch(v, 30);
  expect(v, keyedSyn(v4, KEY, e), 'pass', ['verify_valid'], 1, 'current key, current epoch');
  expect(v, keyedSyn(v6, KEY, e), 'pass', ['verify_valid'], 1, 'IPv6');
  expect(v, keyedSyn(v4, KEY_OLD, e), 'pass', ['verify_valid'], 1, 'previous key');
  expect(v, keyedSyn(v4, KEY, e - 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'previous epoch');
  expect(v, keyedSyn(v4, KEY, e + 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'next epoch');
  expect(v, keyedSyn(v4, KEY_OLD, e - 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'previous key, previous epoch');
  expect(v, keyedSyn(v4, KEY, e - 2n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'two epochs ago');
  expect(v, keyedSyn(v4, randomBytes(16), e), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'another key');
  expect(
    v,
    withOption(v4, tokenOption(KIND, EXID, TOKEN)),
    'drop',
    ['verify_invalid', 'verify_dropped'],
    1,
    'a static-looking value',
  );
});

test('keyed: within the clock skew of an epoch boundary the neighbouring epoch is valid too, with either key', () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed, previous: KEY_OLD, skewSeconds: 5 }).protect(443, 1);
  // 2 s into an epoch: a marker up to 5 s behind still signs with the previous one.
  let e = pinEpoch(v, 2);
  expect(v, keyedSyn(v4, KEY, e), 'pass', ['verify_valid'], 1, 'start: current epoch');
  expect(v, keyedSyn(v4, KEY, e - 1n), 'pass', ['verify_valid'], 1, 'start: previous epoch');
  expect(v, keyedSyn(v4, KEY_OLD, e - 1n), 'pass', ['verify_valid'], 1, 'start: previous key, previous epoch');
  expect(v, keyedSyn(v4, KEY, e + 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'start: next epoch');
  // 3 s before an epoch ends: a marker up to 5 s ahead already signs with the next one.
  e = pinEpoch(v, EPOCH_SECONDS - 3);
  expect(v, keyedSyn(v4, KEY, e), 'pass', ['verify_valid'], 1, 'end: current epoch');
  expect(v, keyedSyn(v4, KEY, e + 1n), 'pass', ['verify_valid'], 1, 'end: next epoch');
  expect(v, keyedSyn(v6, KEY_OLD, e + 1n), 'pass', ['verify_valid'], 1, 'end: previous key, next epoch');
  expect(v, keyedSyn(v4, KEY, e - 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'end: previous epoch');
  expect(v, keyedSyn(v4, KEY, e + 2n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'end: two epochs on');
  // No skew: only the epoch itself, even right at a boundary.
  const exact = new Verifier().policy(1, { mode: TokenModeCode.Keyed, skewSeconds: 0 }).protect(443, 1);
  e = pinEpoch(exact, 1);
  expect(exact, keyedSyn(v4, KEY, e), 'pass', ['verify_valid'], 1, 'no skew: current epoch');
  expect(exact, keyedSyn(v4, KEY, e - 1n), 'drop', ['verify_invalid', 'verify_dropped'], 1, 'no skew: previous epoch');
});

test('keyed: a token is bound to its flow: another port, address or sequence number fails', () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed }).protect(443, 1);
  checkEpoch((e) => {
    const stolen = tokenOption(KIND, EXID, keyedToken(KEY, flowOf(v4), BIND_ALL, e));
    expect(v, withOption(v4, stolen), 'pass', ['verify_valid'], 1, 'the original');
    expect(
      v,
      withOption({ ...v4, tcp: { ...v4.tcp!, sport: 40002 } }, stolen),
      'drop',
      ['verify_invalid', 'verify_dropped'],
      1,
      'new source port',
    );
    expect(
      v,
      withOption({ ...v4, tcp: { ...v4.tcp!, seq: 0x01020305 } }, stolen),
      'drop',
      ['verify_invalid', 'verify_dropped'],
      1,
      'new sequence number',
    );
    expect(
      v,
      withOption({ ...v4, src: '192.0.2.11' }, stolen),
      'drop',
      ['verify_invalid', 'verify_dropped'],
      1,
      'new source address',
    );
  });
});

test('keyed: with fewer bound fields, a rewritten port and sequence number still verify', () => {
  const bind = BindBit.SourceAddress | BindBit.DestinationAddress | BindBit.DestinationPort;
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed, bind }).protect(443, 1);
  checkEpoch((e) => {
    const opt = tokenOption(KIND, EXID, keyedToken(KEY, flowOf(v4), bind, e));
    expect(
      v,
      withOption({ ...v4, tcp: { ...v4.tcp!, sport: 1234, seq: 99 } }, opt),
      'pass',
      ['verify_valid'],
      1,
      'NAT-rewritten port and sequence',
    );
    expect(
      v,
      withOption({ ...v4, src: '192.0.2.99' }, opt),
      'drop',
      ['verify_invalid', 'verify_dropped'],
      1,
      'the address is still bound',
    );
  });
});

test('keyed: without the previous-key flag the old key fails; without a clock nothing keyed is valid', () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed }).protect(443, 1);
  checkEpoch((e) => {
    expect(v, keyedSyn(v4, KEY_OLD, e), 'drop', ['verify_invalid', 'verify_dropped']);
  });
  const noClock = new Verifier({ clock: false }).policy(1, { mode: TokenModeCode.Keyed }).protect(443, 1);
  checkEpoch((e) => {
    expect(noClock, keyedSyn(v4, KEY, e), 'drop', ['verify_invalid', 'verify_dropped']);
  });
});

test("the marker's output verifies: keyed and static, IPv4 and IPv6 (marker and verifier share the maps)", () => {
  for (const mode of [TokenModeCode.Keyed, TokenModeCode.Static]) {
    const v = new Verifier().policy(1, { mode, previous: mode === TokenModeCode.Keyed ? KEY_OLD : TOKEN_OLD }).protect(443, 1);
    const marker = v.markWith(1);
    for (const spec of [v4, v6]) {
      const r = marker.testRun({ data: buildFrame(spec) });
      assert.equal(r.retval, TcAction.UNSPEC);
      const p = parseFrame(r.data);
      assert.ok(findTokenOption(p, KIND, EXID), 'the marker marked the SYN');
      expect(v, r.data, 'pass', ['verify_valid'], 1, `${mode === TokenModeCode.Keyed ? 'keyed' : 'static'} IPv${p.family}`);
      if (mode === TokenModeCode.Keyed) {
        const e = epochAt(Date.now(), EPOCH_SECONDS);
        const want = [e, e - 1n].map((x) => keyedToken(KEY, flowOf(spec), BIND_ALL, x).toString('hex'));
        assert.ok(
          want.includes(findTokenOption(p, KIND, EXID)!.toString('hex')),
          'the marker used the current key (not the previous one)',
        );
      }
    }
  }
});

// ---------------------------------------------------------------------------------------
// Actions, exemptions, ports

test('Monitor counts and drops nothing', () => {
  const v = new Verifier().policy(1).protect(443, 1, IngressActionCode.Monitor);
  expect(v, buildFrame(v4), 'pass', ['verify_missing']);
  expect(v, withOption(v4, tokenOption(KIND, EXID, Buffer.alloc(8))), 'pass', ['verify_invalid']);
  expect(v, withOption(v4, Buffer.from('0101fd01', 'hex')), 'pass', ['verify_malformed']);
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN)), 'pass', ['verify_valid']);
});

test('exempt sources are never dropped, and exemptions belong to their policy', () => {
  const v = new Verifier()
    .policy(1)
    .policy(2)
    .protect(443, 1)
    .protect(8443, 2)
    .exempt(1, '192.0.2.0/28')
    .exempt(1, '2001:db8::/64')
    .exempt(2, '198.51.100.0/24');
  expect(v, buildFrame(v4), 'pass', ['verify_missing', 'verify_exempt'], 1, 'IPv4 exempt');
  expect(v, buildFrame(v6), 'pass', ['verify_missing', 'verify_exempt'], 1, 'IPv6 exempt');
  expect(
    v,
    withOption(v4, tokenOption(KIND, EXID, Buffer.alloc(8))),
    'pass',
    ['verify_invalid', 'verify_exempt'],
    1,
    'invalid, exempt',
  );
  expect(
    v,
    withOption(v4, tokenOption(KIND, EXID, TOKEN)),
    'pass',
    ['verify_valid'],
    1,
    'valid from an exempt source: just valid',
  );
  expect(v, buildFrame({ ...v4, src: '192.0.2.16' }), 'drop', ['verify_missing', 'verify_dropped'], 1, 'just outside the prefix');
  // 192.0.2.10 is exempt under policy 1, not under policy 2 which protects 8443.
  expect(
    v,
    buildFrame({ ...v4, tcp: { ...v4.tcp!, dport: 8443 } }),
    'drop',
    ['verify_missing', 'verify_dropped'],
    2,
    'another policy',
  );
  expect(
    v,
    buildFrame({ ...v4, src: '198.51.100.3', tcp: { ...v4.tcp!, dport: 8443 } }),
    'pass',
    ['verify_missing', 'verify_exempt'],
    2,
    'its own exemption',
  );
});

test('an exact port wins over "every port"; every port covers the rest', () => {
  const v = new Verifier().policy(1).policy(2, { token: TOKEN_OLD }).protect(0, 1).protect(443, 2);
  expect(v, withOption(v4, tokenOption(KIND, EXID, TOKEN_OLD)), 'pass', ['verify_valid'], 2, '443: policy 2');
  expect(
    v,
    withOption({ ...v4, tcp: { ...v4.tcp!, dport: 22 } }, tokenOption(KIND, EXID, TOKEN)),
    'pass',
    ['verify_valid'],
    1,
    '22: policy 1',
  );
  expect(v, buildFrame({ ...v4, tcp: { ...v4.tcp!, dport: 5 } }), 'drop', ['verify_missing', 'verify_dropped'], 1, '5: policy 1');
});

test('IPv6 behind extension headers is verified; past the walk limit it is unreadable, passed under Monitor and dropped where a policy enforces', () => {
  const v = new Verifier().policy(1).protect(443, 1);
  expect(
    v,
    withOption({ ...v6, ipv6Ext: [{ type: 0 }, { type: 60 }] }, tokenOption(KIND, EXID, TOKEN)),
    'pass',
    ['verify_valid'],
    1,
    'valid',
  );
  expect(v, buildFrame({ ...v6, ipv6Ext: [{ type: 0 }] }), 'drop', ['verify_missing', 'verify_dropped'], 1, 'missing');
  const deep = Array.from({ length: 7 }, () => ({ type: 60 }));
  expect(v, buildFrame({ ...v6, ipv6Ext: deep }), 'pass', ['unreadable'], 0, 'opaque, no enforcing rule');
  v.enforcing(1);
  expectCounts(
    v,
    buildFrame({ ...v6, ipv6Ext: deep }),
    'drop',
    { [`${LO}/0/unreadable`]: 1, [`${LO}/1/verify_dropped`]: 1 },
    'opaque, enforcing',
  );
});

// ---------------------------------------------------------------------------------------
// Fragments: the stack keeps of a first fragment only what reassembly keeps

/** The TCP segment of `spec` (header and payload), as a fragment's payload carries it. */
function segmentOf(spec: FrameSpec, payload = Buffer.alloc(0)): Buffer {
  const frame = buildFrame({ ...spec, payload });
  const f = parseFrame(frame);
  assert.ok(f.l4Offset !== null, 'a TCP segment');
  return frame.subarray(f.l4Offset);
}

/** The first IPv4 fragment of `seg`: its first `n` bytes, More Fragments set. */
function v4First(seg: Buffer, n: number, spec: FrameSpec = v4): Buffer {
  return buildFrame({
    src: spec.src,
    dst: spec.dst,
    protocol: IPPROTO_TCP,
    payload: seg.subarray(0, n),
    mf: true,
    fragOffset: 0,
    df: false,
    ipId: 0x4242,
  });
}

/** The first IPv6 fragment of `seg`: its first `n` bytes behind a fragment header (M set, or not: an atomic fragment). */
function v6First(seg: Buffer, n: number, more = true): Buffer {
  const frag = { type: 44, body: Buffer.from(more ? '000100004242' : '000000004242', 'hex') };
  return buildFrame({ src: v6.src, dst: v6.dst, ipv6Ext: [frag], protocol: IPPROTO_TCP, payload: seg.subarray(0, n) });
}

test('IPv4 first fragments: what the fragment keeps once cut to 8-byte units decides; a SYN cut short is malformed', () => {
  const v = new Verifier().policy(1).protect(443, 1);
  const token = tokenOption(KIND, EXID, TOKEN);
  const marked = segmentOf(
    { ...v4, tcp: { ...v4.tcp!, options: Buffer.concat([LINUX_SYN_OPTIONS, token]) } },
    Buffer.alloc(16, 9),
  );
  const bare = segmentOf(v4, Buffer.alloc(16, 9));
  assert.equal(marked.length, 52 + 16);
  // The whole header in what the fragment keeps: verified as a SYN.
  expect(v, v4First(marked, 56), 'pass', ['verify_valid'], 1, '56 bytes: header and token kept');
  expect(v, v4First(bare, 40), 'drop', ['verify_missing', 'verify_dropped'], 1, '40 bytes: header kept, no token');
  // 59 bytes are cut to 56: still the whole header. 55 are cut to 48: the token is lost.
  expect(v, v4First(marked, 59), 'pass', ['verify_valid'], 1, '59 bytes');
  expect(v, v4First(marked, 55), 'drop', ['verify_malformed', 'verify_dropped'], 1, '55 bytes: options cut at 48');
  // The bypass: 14 bytes whose flags say ACK are cut to 8, and a later fragment may bring SYN.
  const ack = Buffer.from(marked);
  ack[13] = TCP_ACK;
  expect(v, v4First(ack, 14), 'drop', ['verify_malformed', 'verify_dropped'], 1, '14 bytes, ACK: flags not kept');
  expect(v, v4First(marked, 8), 'drop', ['verify_malformed', 'verify_dropped'], 1, '8 bytes: ports only');
  // 16 bytes keep the flags: an ACK is not a SYN whatever follows; a SYN is cut short.
  expect(v, v4First(ack, 16), 'pass', [], 1, '16 bytes, ACK');
  expect(v, v4First(marked, 16), 'drop', ['verify_malformed', 'verify_dropped'], 1, '16 bytes, SYN');
  // An unprotected port is not looked at; an exempt source is counted, not dropped.
  expect(v, v4First(segmentOf({ ...v4, tcp: { ...v4.tcp!, dport: 22 } }), 8), 'pass', [], 1, 'port 22');
  v.exempt(1, '192.0.2.0/24');
  expect(v, v4First(ack, 14), 'pass', ['verify_malformed', 'verify_exempt'], 1, 'exempt source');
  // Later fragments carry no TCP header: never looked at.
  const later = buildFrame({
    src: v4.src,
    dst: v4.dst,
    protocol: IPPROTO_TCP,
    payload: marked.subarray(8),
    fragOffset: 1,
    mf: false,
    df: false,
    ipId: 0x4242,
  });
  expect(v, later, 'pass', [], 1, 'a later fragment');
});

test('IPv6 first fragments are cut the same way; an atomic fragment is a whole packet', () => {
  const v = new Verifier().policy(1).protect(443, 1);
  const token = tokenOption(KIND, EXID, TOKEN);
  const marked = segmentOf(
    { ...v6, tcp: { ...v6.tcp!, options: Buffer.concat([LINUX_SYN_OPTIONS, token]) } },
    Buffer.alloc(16, 9),
  );
  expect(v, v6First(marked, 56), 'pass', ['verify_valid'], 1, '56 bytes');
  expect(v, v6First(marked, 63), 'pass', ['verify_valid'], 1, '63 bytes: cut to 56');
  expect(v, v6First(marked, 50), 'drop', ['verify_malformed', 'verify_dropped'], 1, '50 bytes: cut to 48, the token is lost');
  expect(v, v6First(marked, 20), 'drop', ['verify_malformed', 'verify_dropped'], 1, '20 bytes: cut to 16');
  const ack = Buffer.from(marked);
  ack[13] = TCP_ACK;
  expect(v, v6First(ack, 20), 'pass', [], 1, '20 bytes, ACK');
  expect(v, v6First(segmentOf(v6), 40, false), 'drop', ['verify_missing', 'verify_dropped'], 1, 'atomic fragment, no token');
  expect(
    v,
    v6First(segmentOf({ ...v6, tcp: { ...v6.tcp!, options: Buffer.concat([LINUX_SYN_OPTIONS, token]) } }), 52, false),
    'pass',
    ['verify_valid'],
    1,
    'atomic fragment, token',
  );
});

// ---------------------------------------------------------------------------------------
// Frames the parser cannot read

test('unreadable IP frames are counted per interface, passed where nothing enforces and dropped where a policy enforces; other traffic flows', () => {
  const v = new Verifier().policy(1).protect(443, 1, IngressActionCode.Monitor);
  const syn = buildFrame(v4);
  const threeTags = buildFrame({ ...v4, vlan: [{ id: 1, tpid: 0x88a8 }, 2, 3] });
  const shortIhl = Buffer.from(syn);
  shortIhl[14] = 0x44;
  const badVersion = Buffer.from(syn);
  badVersion[14] = 0x65;
  const longer = Buffer.from(syn);
  longer.writeUInt16BE(longer.readUInt16BE(16) + 8, 16);
  const cases: [string, Buffer][] = [
    ['three VLAN tags', threeTags],
    ['IPv4 ihl 4', shortIhl],
    ['version 6 in an IPv4 frame', badVersion],
    ['IP length past the frame', longer],
    ['a truncated TCP header', syn.subarray(0, 14 + 20 + 6)],
  ];
  for (const [what, frame] of cases) expect(v, frame, 'pass', ['unreadable'], 0, `${what}, Monitor`);
  v.enforcing(1);
  for (const [what, frame] of cases)
    expectCounts(v, frame, 'drop', { [`${LO}/0/unreadable`]: 1, [`${LO}/1/verify_dropped`]: 1 }, `${what}, Enforce`);
  const other = [
    buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28, 1) }),
    buildFrame({ etherType: 0x88cc, payload: Buffer.alloc(40, 2) }),
    buildFrame({ src: v4.src, dst: v4.dst, protocol: IPPROTO_UDP, payload: Buffer.alloc(20) }),
    buildFrame({ ...v4, tcp: { ...v4.tcp!, flags: TCP_ACK } }),
  ];
  for (const f of other) expect(v, f, 'pass', [], 1, 'ARP, LLDP, UDP, an ACK');
});

// ---------------------------------------------------------------------------------------
// Bonds: native XDP on a bond runs in each slave's driver

test("bonds: the agent writes a bond's rules under each slave's ifindex too, which is what XDP on the bond sees", () => {
  // The bond is named by the policy; its slave is the device test runs arrive on (ingress_ifindex LO).
  const BOND = 900;
  const ifs: HostInterface[] = [
    { name: 'bond0', ifindex: BOND, up: true, loopback: false, mtu: 1500, defaultRoute: true, linkType: 'ether', kind: 'bond' },
    {
      name: 'eth0',
      ifindex: LO,
      up: true,
      loopback: false,
      mtu: 1500,
      defaultRoute: false,
      linkType: 'ether',
      kind: null,
      master: 'bond0',
    },
  ];
  const p = validatePolicy({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenPolicy',
    metadata: { name: 'guard' },
    spec: {
      interfaces: { names: ['bond0'] },
      token: { mode: 'Static', secretRef: { name: 'k' } },
      ingress: { action: 'Enforce', ports: [443] },
    },
  });
  const d = computeDesired({
    policies: [p],
    keys: new Map([['guard', { current: TOKEN }]]),
    nodeLabels: {},
    interfaces: ifs,
    previousIds: new Map(),
  });
  assert.deepEqual([...d.hooks.keys()], [`${BOND}/ingress`], 'the hook goes on the bond');
  const keyed = [...d.ingressPorts.values()].map(([k]) => k.readUInt32LE(0));
  assert.deepEqual(
    [...new Set(keyed)].sort((a, b) => a - b),
    [LO, BOND],
    'rules under the bond and under its slave',
  );
  const install = (v: Verifier, withSlaves: boolean): void => {
    for (const [id, value] of d.policySlots) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(id);
      v.maps.policies.update(k, value);
    }
    for (const [k, value] of d.ingressPorts.values()) if (withSlaves || k.readUInt32LE(0) === BOND) v.portRule(k, value);
  };
  const id = d.ids.get('guard')!;
  const full = new Verifier();
  install(full, true);
  expect(
    full,
    buildFrame(v4),
    'drop',
    ['verify_missing', 'verify_dropped'],
    id,
    "arriving on the slave: verified under the bond's policy",
  );
  expect(full, withOption(v4, tokenOption(KIND, EXID, TOKEN)), 'pass', ['verify_valid'], id, 'valid');
  // What it would be without them: the slave's SYNs matched no rule and passed uncounted.
  const bondOnly = new Verifier();
  install(bondOnly, false);
  expect(bondOnly, buildFrame(v4), 'pass', [], id, 'rules under the bond only');
});

// ---------------------------------------------------------------------------------------
// Replay limit

test('replay limit: the same flow and sequence number is accepted N times a second, then refused', async () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed }).protect(443, 1, IngressActionCode.Enforce, 2);
  const e = epochAt(Date.now(), EPOCH_SECONDS);
  const syn = keyedSyn(v4, KEY, e);
  const run = (what: string, want: Verdict, counters: Record<string, number>): void => {
    const got = v.run('xdp', syn);
    assert.equal(got.verdict, want, `${what}: verdict`);
    assert.deepEqual(got.changed, counters, `${what}: counters`);
  };
  run('first', 'pass', { '1/1/verify_valid': 1 });
  run('second', 'pass', { '1/1/verify_valid': 1 });
  run('third within the second', 'drop', { '1/1/verify_replay': 1, '1/1/verify_dropped': 1 });
  run('fourth', 'drop', { '1/1/verify_replay': 1, '1/1/verify_dropped': 1 });
  // Another sequence number is another SYN.
  const other = keyedSyn({ ...v4, tcp: { ...v4.tcp!, seq: 7 } }, KEY, e);
  assert.deepEqual(v.run('tc', other).changed, { '1/1/verify_valid': 1 });
  // A new one-second window.
  await sleep(1100);
  run('after a second', 'pass', { '1/1/verify_valid': 1 });
  assert.equal(v.maps.replay.keys().length, 2, 'two flows remembered');
});

test("replay limit: missing and invalid SYNs do not use up a flow's allowance; Monitor counts replays without dropping", () => {
  const v = new Verifier().policy(1, { mode: TokenModeCode.Keyed }).protect(443, 1, IngressActionCode.Monitor, 1);
  const syn = keyedSyn(v4, KEY, epochAt(Date.now(), EPOCH_SECONDS));
  assert.deepEqual(v.run('xdp', withOption(v4, tokenOption(KIND, EXID, Buffer.alloc(8)))).changed, { '1/1/verify_invalid': 1 });
  assert.equal(v.maps.replay.keys().length, 0, 'invalid SYNs are not remembered');
  assert.deepEqual(v.run('xdp', syn).changed, { '1/1/verify_valid': 1 });
  const again = v.run('xdp', syn);
  assert.equal(again.verdict, 'pass');
  assert.deepEqual(again.changed, { '1/1/verify_replay': 1 });
});
