/**
 * The egress marker (bpf/marker.bpf.c) driven with BPF_PROG_TEST_RUN on crafted frames,
 * plus real SYNs through a veth pair in two private network namespaces (checksum offload
 * on and off). Every assertion is on exact bytes and exact counter deltas.
 *
 * marker-compat.test.ts runs every test here again on marker_compat.bpf.o, the build for
 * kernels without bpf_cast_to_kern_ctx() (it sets NT_TEST_MARKER_OBJECT).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { binding, type NativeMap, type NativeObject, type NativeProgram } from '../../src/native/binding.js';
import {
  BindBit,
  encodeClock,
  encodeEgressRule,
  encodeLpmKey,
  encodePolicy,
  NT_OPT_EXID_DEFAULT as EXID,
  NT_OPT_KIND_DEFAULT as KIND,
  TokenModeCode,
  type CounterName,
} from '../../src/lib/abi.js';
import { CounterSlots } from '../../src/agent/counters.js';
import { raiseEgressGeneration } from '../../src/agent/map-sync.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import { measureClock } from '../../src/agent/clock.js';
import { parseCidr } from '../../src/lib/cidr.js';
import { parsePcap, toEthernet } from '../../src/lib/pcap.js';
import {
  buildFrame,
  findTokenOption,
  parseFrame,
  tokenOption,
  ETH_P_ARP,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type FrameSpec,
} from '../../src/lib/packet.js';
import { TcAction } from '../../src/native/bpf.js';
import { fixture } from '../lib/native.js';
import { PACKAGE_ROOT, bpfObjectPath } from '../../src/lib/package.js';
import { KEYED_KEY } from '../lib/keys.js';

const MARKER_OBJ = process.env.NT_TEST_MARKER_OBJECT ?? bpfObjectPath('marker');
const ENCAP_OBJ = fixture('encap');
const HELPER = path.join(PACKAGE_ROOT, 'dist/test/packet/netns-helper.js');

/** test_run's device when ctx gives none: the loopback device of the caller's namespace. */
const LO = 1;

const TOKEN = Buffer.from('a1b2c3d4e5f60718', 'hex');
const POLICY = 3;

/** MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: a Linux SYN's 20 option bytes. */
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

type Counter = CounterName;

// Build the objects once per run (make is a no-op when they are up to date).
execFileSync('make', ['-s', '-C', path.join(PACKAGE_ROOT, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });

function runTag(): string {
  return `${process.pid}-${randomBytes(3).toString('hex')}`;
}

function makePinDir(): string {
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const dir = `/sys/fs/bpf/netoken-test-${runTag()}`;
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

interface CtxFields {
  ifindex?: number;
  gsoSegs?: number;
  gsoSize?: number;
}

/** struct __sk_buff bytes for test_run's ctx_in: only the fields the kernel accepts there. */
function skbCtx(f: CtxFields): Buffer {
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(f.ifindex ?? 0, 40);
  ctx.writeUInt32LE(f.gsoSegs ?? 0, 164);
  ctx.writeUInt32LE(f.gsoSize ?? 0, 176);
  return ctx;
}

interface PolicyOpts {
  mode?: TokenModeCode;
  kind?: number;
  exid?: number;
  token?: Buffer;
  previous?: Buffer;
  bind?: number;
  epochSeconds?: number;
}

/** One loaded marker object with private pinned maps. */
class Marker {
  readonly pinDir: string;
  readonly obj: NativeObject;
  readonly prog: NativeProgram;
  private readonly maps: Record<'nt_egress4' | 'nt_egress6' | 'nt_policies' | 'nt_config' | 'nt_clock', NativeMap>;
  private readonly slots: CounterSlots;

  constructor(
    readonly objectPath = MARKER_OBJ,
    readonly program = 'nt_mark_egress',
  ) {
    this.pinDir = makePinDir();
    try {
      this.obj = binding().openObject(objectPath, { pinRoot: this.pinDir });
      this.prog = this.obj.program(program);
      this.maps = {
        nt_egress4: this.obj.map('nt_egress4'),
        nt_egress6: this.obj.map('nt_egress6'),
        nt_policies: this.obj.map('nt_policies'),
        nt_config: this.obj.map('nt_config'),
        nt_clock: this.obj.map('nt_clock'),
      };
      this.slots = CounterSlots.of(this.obj);
      // The programs run on loopback: its own counters exist with or without rules, as for a hooked interface.
      this.slots.slot(LO, 0);
    } catch (err) {
      rmSync(this.pinDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A destination rule, with the counter slot of (ifindex, policyId), as the agent writes it. */
  rule(ifindex: number, cidr: string, policyId = POLICY, ports: number[] = []): this {
    const c = parseCidr(cidr);
    this.maps[c.family === 4 ? 'nt_egress4' : 'nt_egress6'].update(
      encodeLpmKey(ifindex, c),
      encodeEgressRule(policyId, ports, this.slots.slot(ifindex, policyId)),
    );
    raiseEgressGeneration(this.maps.nt_config);
    return this;
  }

  policy(id = POLICY, o: PolicyOpts = {}): this {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(id);
    const mode = o.mode ?? TokenModeCode.Static;
    this.maps.nt_policies.update(
      key,
      encodePolicy({
        mode,
        kind: o.kind ?? KIND,
        exid: o.exid ?? EXID,
        epochSeconds: o.epochSeconds ?? (mode === TokenModeCode.Keyed ? 60 : 0),
        bind: o.bind ?? (mode === TokenModeCode.Keyed ? BIND_ALL : 0),
        current: o.token ?? (mode === TokenModeCode.Keyed ? Buffer.alloc(16, 7) : TOKEN),
        ...(o.previous ? { previous: o.previous } : {}),
      }),
    );
    return this;
  }

  /** Write the wall clock as the agent does, measured with the marker object's probe. */
  clock(): this {
    const probe = this.obj.program('nt_clock_probe');
    try {
      const r = measureClock(probe);
      this.maps.nt_clock.update(Buffer.alloc(4), encodeClock(r.taiOffsetNs, r.bootOffsetNs));
    } finally {
      probe.close();
    }
    return this;
  }

  /** The usual setup: policy POLICY marks every IPv4 and IPv6 destination on loopback. */
  static everything(objectPath?: string, program?: string): Marker {
    return new Marker(objectPath, program).policy().rule(LO, '0.0.0.0/0').rule(LO, '::/0');
  }

  run(frame: Buffer, ctx?: CtxFields): Buffer {
    const r = this.prog.testRun({ data: frame, ...(ctx ? { ctxIn: skbCtx(ctx) } : {}) });
    assert.equal(r.retval, TcAction.UNSPEC, `return value: got ${r.retval}, want TC_ACT_UNSPEC (-1)`);
    return r.data;
  }

  /** Every counter, summed over CPUs, as "ifindex/policy/name". */
  counters(): Map<string, bigint> {
    const out = new Map<string, bigint>();
    for (const r of this.slots.rows()) out.set(`${r.ifindex}/${r.policyId}/${r.counter}`, r.value);
    return out;
  }

  counter(ifindex: number, policyId: number, name: Counter): bigint {
    return this.counters().get(`${ifindex}/${policyId}/${name}`) ?? 0n;
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
    this.slots.close();
    this.prog.close();
    this.obj.close();
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}

function withMarker<T>(m: Marker, fn: (m: Marker) => T): T {
  try {
    return fn(m);
  } finally {
    m.close();
  }
}

/** Counters that changed between two snapshots, as "ifindex/policy/name" -> delta. */
function delta(before: Map<string, bigint>, after: Map<string, bigint>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of after) {
    const n = Number(v - (before.get(k) ?? 0n));
    if (n !== 0) d[k] = n;
  }
  return d;
}

/** Run `frame` and return the output plus the counter changes it caused. */
function runCounted(m: Marker, frame: Buffer, ctx?: CtxFields): { out: Buffer; changed: Record<string, number> } {
  const before = m.counters();
  const out = m.run(frame, ctx);
  return { out, changed: delta(before, m.counters()) };
}

/** The frame the marker should emit: the same spec with our option appended to the TCP options, every checksum recomputed. */
function expectMarked(spec: FrameSpec, opt = tokenOption(KIND, EXID, TOKEN)): Buffer {
  if (!spec.tcp) throw new Error('expectMarked needs a TCP spec');
  return buildFrame({
    ...spec,
    tcp: { ...spec.tcp, checksum: 'full', options: Buffer.concat([spec.tcp.options ?? Buffer.alloc(0), opt]) },
  });
}

function hexDiff(got: Buffer, want: Buffer): string {
  return `\n got  ${got.toString('hex')}\n want ${want.toString('hex')}`;
}

/** Assert the marker marked `spec`'s frame: exact bytes, valid checksums, one MARKED count. */
function assertMarks(
  m: Marker,
  spec: FrameSpec,
  opts: { ifindex?: number; policyId?: number; opt?: Buffer; ctx?: CtxFields } = {},
): Buffer {
  const { out, changed } = runCounted(m, buildFrame(spec), opts.ctx);
  const want = expectMarked(spec, opts.opt);
  assert.ok(out.equals(want), `marked frame differs:${hexDiff(out, want)}`);
  const p = parseFrame(out);
  assert.deepEqual(p.errors, [], `parse errors in output: ${p.errors.join('; ')}`);
  if (p.family === 4) assert.equal(p.ipv4ChecksumOk, true, 'IPv4 header checksum of the output');
  assert.equal(p.tcpChecksumOk, true, 'TCP checksum of the output');
  assert.equal(p.tcp?.optionsError, null, `output options: ${String(p.tcp?.optionsError)}`);
  const opt = opts.opt ?? tokenOption(KIND, EXID, TOKEN);
  assert.deepEqual(findTokenOption(p, opt[0] ?? 0, opt.readUInt16BE(2)), opt.subarray(4), 'token value in the output');
  assert.deepEqual(changed, { [`${opts.ifindex ?? LO}/${opts.policyId ?? POLICY}/marked`]: 1 }, 'counters');
  return out;
}

/** Assert the frame passes byte-identical and exactly `counter` (or nothing, when null) went up by one. */
function assertSkips(
  m: Marker,
  frame: Buffer,
  counter: Counter | null,
  opts: { ifindex?: number; policyId?: number; ctx?: CtxFields } = {},
): void {
  const { out, changed } = runCounted(m, frame, opts.ctx);
  assert.ok(out.equals(frame), `frame was changed:${hexDiff(out, frame)}`);
  const want = counter === null ? {} : { [`${opts.ifindex ?? LO}/${opts.policyId ?? POLICY}/${counter}`]: 1 };
  assert.deepEqual(changed, want, 'counters');
}

const v4: FrameSpec = {
  src: '192.0.2.10',
  dst: '203.0.113.7',
  tcp: { sport: 40000, dport: 443, seq: 0x01020304, flags: TCP_SYN },
};
const v6: FrameSpec = {
  src: '2001:db8::10',
  dst: '2001:db8:1::7',
  tcp: { sport: 40000, dport: 443, seq: 0xfeedf00d, flags: TCP_SYN },
};
const withOpts = (spec: FrameSpec, options: Buffer): FrameSpec => ({
  ...spec,
  tcp: { ...(spec.tcp ?? { sport: 1, dport: 2 }), options },
});

// ---------------------------------------------------------------------------------------
// Marking

test('marks an IPv4 SYN without options', () => {
  withMarker(Marker.everything(), (m) => {
    const out = assertMarks(m, v4);
    const p = parseFrame(out);
    assert.equal(p.tcp?.doff, 8);
    assert.equal(p.ipTotalLength, 52);
  });
});

test('marks an IPv4 SYN with the options Linux sends (MSS, SACK-permitted, TS, NOP, WScale)', () => {
  withMarker(Marker.everything(), (m) => {
    const out = assertMarks(m, withOpts(v4, LINUX_SYN_OPTIONS));
    const p = parseFrame(out);
    assert.deepEqual(
      p.tcp?.options.map((o) => o.kind),
      [2, 4, 8, 1, 3, KIND],
      'existing options kept in order, ours last',
    );
  });
});

test('marks an IPv4 SYN whose IP header carries options (ihl 6 and 15)', () => {
  withMarker(Marker.everything(), (m) => {
    assertMarks(m, { ...withOpts(v4, LINUX_SYN_OPTIONS), ipOptions: Buffer.from([1, 1, 1, 0]) });
    // 40 bytes of IP options: a record-route option with room for 9 addresses, then EOL.
    const rr = Buffer.concat([Buffer.from([7, 39, 4]), Buffer.alloc(36), Buffer.from([0])]);
    assertMarks(m, { ...withOpts(v4, LINUX_SYN_OPTIONS), ipOptions: rr });
  });
});

test('marks an IPv6 SYN, with and without options', () => {
  withMarker(Marker.everything(), (m) => {
    assertMarks(m, v6);
    const out = assertMarks(m, withOpts(v6, LINUX_SYN_OPTIONS));
    assert.equal(parseFrame(out).payloadLength, 20 + 20 + 12);
  });
});

test('marks SYNs behind an 802.1Q tag and behind QinQ tags, IPv4 and IPv6', () => {
  withMarker(Marker.everything(), (m) => {
    assertMarks(m, { ...withOpts(v4, LINUX_SYN_OPTIONS), vlan: 100 });
    assertMarks(m, { ...withOpts(v6, LINUX_SYN_OPTIONS), vlan: 4094 });
    assertMarks(m, { ...v4, vlan: { id: 5, tpid: 0x88a8 } });
    assertMarks(m, { ...withOpts(v4, LINUX_SYN_OPTIONS), vlan: [{ id: 7, tpid: 0x88a8 }, { id: 300 }] });
    assertMarks(m, { ...v6, vlan: [{ id: 7, tpid: 0x88a8 }, { id: 300 }] });
  });
});

test('fills the option space exactly: 28 bytes of options + 12 = 40 (doff 15)', () => {
  withMarker(Marker.everything(), (m) => {
    const out = assertMarks(m, withOpts(v4, Buffer.concat([LINUX_SYN_OPTIONS, Buffer.alloc(8, 1)])));
    assert.equal(parseFrame(out).tcp?.doff, 15);
  });
});

test('uses the kind, ExID and token of the policy that matched', () => {
  const token = Buffer.from('0011223344556677', 'hex');
  withMarker(new Marker().policy(9, { kind: 254, exid: 0x1234, token }).rule(LO, '203.0.113.0/24', 9), (m) => {
    assertMarks(m, v4, { policyId: 9, opt: tokenOption(254, 0x1234, token) });
  });
});

test('a fully checksummed and a pseudo-header-only (CHECKSUM_PARTIAL style) input both come out as the kernel computes them', () => {
  withMarker(Marker.everything(), (m) => {
    for (const spec of [withOpts(v4, LINUX_SYN_OPTIONS), withOpts(v6, LINUX_SYN_OPTIONS)]) {
      const input = buildFrame({ ...spec, tcp: { ...spec.tcp!, checksum: 'partial' } });
      const out = m.run(input);
      const want = expectMarked(spec);
      const p = parseFrame(out);
      const l4 = p.l4Offset ?? 0;
      // Every byte but the TCP checksum is what a marked packet must hold.
      assert.ok(out.subarray(0, l4 + 16).equals(want.subarray(0, l4 + 16)), `headers differ:${hexDiff(out, want)}`);
      assert.ok(out.subarray(l4 + 18).equals(want.subarray(l4 + 18)), `segment differs:${hexDiff(out, want)}`);
      // test_run skbs are CHECKSUM_NONE, so bpf_l4_csum_replace treats the field as a
      // full checksum and moves it by exactly the change in the data and pseudo-header:
      // the output is off from the correct checksum by just what the input was off.
      // (The real CHECKSUM_PARTIAL path, where the field ends as the new pseudo-header
      // seed, is checked on a veth with offload on in the namespace test below.)
      const inOff = onesSub(parseFrame(input).tcp?.checksum ?? 0, parseFrame(buildFrame(spec)).tcp?.checksum ?? 0);
      const outOff = onesSub(p.tcp?.checksum ?? 0, parseFrame(want).tcp?.checksum ?? 0);
      assert.equal(outOff, inOff, `checksum error carried: got 0x${outOff.toString(16)}, want 0x${inOff.toString(16)}`);
      assert.equal(p.tcpChecksumIsPseudoSeed, false);
    }
  });
});

/** a - b in 16-bit one's complement, normalised so that 0 and 0xffff compare equal. */
function onesSub(a: number, b: number): number {
  let s = a + (~b & 0xffff);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff ? 0 : s;
}

// ---------------------------------------------------------------------------------------
// Which SYNs a policy covers

test('port filter: a listed port is marked, another port is not', () => {
  withMarker(new Marker().policy().rule(LO, '203.0.113.0/24', POLICY, [443, 8443]), (m) => {
    assertMarks(m, { ...v4, tcp: { ...v4.tcp!, dport: 8443 } });
    assertMarks(m, v4);
    assertSkips(m, buildFrame({ ...v4, tcp: { ...v4.tcp!, dport: 80 } }), 'skipped_no_policy', { policyId: 0 });
  });
});

test('the longest matching prefix decides the policy', () => {
  const wide = Buffer.from('1111111111111111', 'hex');
  const narrow = Buffer.from('2222222222222222', 'hex');
  const m = new Marker().policy(2, { token: wide }).policy(4, { token: narrow });
  m.rule(LO, '203.0.0.0/8', 2).rule(LO, '203.0.113.0/24', 4).rule(LO, '2001:db8::/32', 2).rule(LO, '2001:db8:1::/48', 4);
  withMarker(m, () => {
    assertMarks(m, v4, { policyId: 4, opt: tokenOption(KIND, EXID, narrow) });
    assertMarks(m, { ...v4, dst: '203.0.5.5' }, { policyId: 2, opt: tokenOption(KIND, EXID, wide) });
    assertMarks(m, v6, { policyId: 4, opt: tokenOption(KIND, EXID, narrow) });
    assertMarks(m, { ...v6, dst: '2001:db8:2::1' }, { policyId: 2, opt: tokenOption(KIND, EXID, wide) });
    assertSkips(m, buildFrame({ ...v4, dst: '198.51.100.1' }), 'skipped_no_policy', { policyId: 0 });
  });
});

test('rules are per interface: a rule for ifindex 7 does not mark on ifindex 1', () => {
  withMarker(new Marker().policy().rule(7, '0.0.0.0/0').rule(7, '::/0'), (m) => {
    assertSkips(m, buildFrame(v4), 'skipped_no_policy', { policyId: 0 });
    assertSkips(m, buildFrame(v6), 'skipped_no_policy', { policyId: 0 });
  });
});

test('a rule pointing at an empty policy slot does not mark; a keyed policy before the agent wrote the clock neither', () => {
  withMarker(new Marker().rule(LO, '203.0.113.0/24', 8), (m) => {
    assertSkips(m, buildFrame(v4), 'skipped_no_policy', { policyId: 0 });
  });
  withMarker(new Marker().policy(POLICY, { mode: TokenModeCode.Keyed }).rule(LO, '0.0.0.0/0'), (m) => {
    assertSkips(m, buildFrame(v4), 'skipped_no_clock');
  });
  // A keyed slot without an epoch length cannot have an epoch either.
  withMarker(new Marker().clock().policy(POLICY, { mode: TokenModeCode.Keyed, epochSeconds: 0 }).rule(LO, '0.0.0.0/0'), (m) => {
    assertSkips(m, buildFrame(v4), 'skipped_no_clock');
  });
});

// ---------------------------------------------------------------------------------------
// Keyed tokens

function flowOf(spec: FrameSpec): { src: string; dst: string; sport: number; dport: number; seq: number } {
  return { src: spec.src!, dst: spec.dst!, sport: spec.tcp!.sport, dport: spec.tcp!.dport, seq: spec.tcp!.seq ?? 0 };
}

/** Assert `spec` is marked with the keyed value the TypeScript implementation computes (retrying across an epoch boundary). */
function assertMarksKeyed(m: Marker, spec: FrameSpec, bind: number, epochSeconds: number, key = KEYED_KEY): void {
  for (let i = 0; ; i++) {
    const e = epochAt(Date.now(), epochSeconds);
    try {
      assertMarks(m, spec, { opt: tokenOption(KIND, EXID, keyedToken(key, flowOf(spec), bind, e)) });
      return;
    } catch (err) {
      if (i >= 2 || epochAt(Date.now(), epochSeconds) === e) throw err;
    }
  }
}

test("keyed: the value is SipHash-2-4 of the SYN's flow and epoch, as src/lib/siphash.ts computes it (IPv4, IPv6, VLAN)", () => {
  withMarker(
    new Marker()
      .clock()
      .policy(POLICY, { mode: TokenModeCode.Keyed, token: KEYED_KEY, epochSeconds: 30 })
      .rule(LO, '0.0.0.0/0')
      .rule(LO, '::/0'),
    (m) => {
      assertMarksKeyed(m, v4, BIND_ALL, 30);
      assertMarksKeyed(m, withOpts(v4, LINUX_SYN_OPTIONS), BIND_ALL, 30);
      assertMarksKeyed(m, v6, BIND_ALL, 30);
      assertMarksKeyed(m, { ...withOpts(v6, LINUX_SYN_OPTIONS), vlan: 42 }, BIND_ALL, 30);
      // Every field changes the value.
      assertMarksKeyed(m, { ...v4, tcp: { ...v4.tcp!, sport: 40001 } }, BIND_ALL, 30);
      assertMarksKeyed(m, { ...v4, tcp: { ...v4.tcp!, seq: 0 } }, BIND_ALL, 30);
    },
  );
});

test('keyed: only the bound fields go into the value; the previous key is never used to mark', () => {
  for (const bind of [
    BindBit.SourceAddress,
    BindBit.DestinationPort | BindBit.Sequence,
    BindBit.SourceAddress | BindBit.DestinationAddress,
    0,
  ]) {
    const m = new Marker().clock().policy(POLICY, {
      mode: TokenModeCode.Keyed,
      token: KEYED_KEY,
      bind,
      previous: Buffer.alloc(16, 0xee),
      epochSeconds: 86400,
    });
    withMarker(m.rule(LO, '0.0.0.0/0').rule(LO, '::/0'), () => {
      assertMarksKeyed(m, v4, bind, 86400);
      assertMarksKeyed(m, v6, bind, 86400);
    });
  }
});

// ---------------------------------------------------------------------------------------
// Traffic that is not an opening SYN: untouched and uncounted

test('ACK, SYN-ACK, RST, FIN and data segments pass untouched and uncounted', () => {
  withMarker(Marker.everything(), (m) => {
    for (const flags of [TCP_ACK, TCP_SYN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK, TCP_FIN | TCP_ACK, TCP_PSH | TCP_ACK]) {
      for (const spec of [v4, v6, { ...v4, vlan: 10 }]) {
        assertSkips(
          m,
          buildFrame({ ...spec, tcp: { ...spec.tcp!, flags, options: LINUX_SYN_OPTIONS }, payload: Buffer.from('x') }),
          null,
        );
      }
    }
  });
});

test('UDP, ICMP, ICMPv6, ARP and a later IPv4 fragment pass untouched and uncounted', () => {
  withMarker(Marker.everything(), (m) => {
    const frames = [
      buildFrame({ src: '192.0.2.1', dst: '203.0.113.7', protocol: IPPROTO_UDP, payload: Buffer.alloc(20, 2) }),
      buildFrame({
        src: '192.0.2.1',
        dst: '203.0.113.7',
        protocol: IPPROTO_ICMP,
        payload: Buffer.from('0800f7ff00000000', 'hex'),
      }),
      buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', protocol: 58, payload: Buffer.alloc(8) }),
      buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', vlan: 3, protocol: IPPROTO_UDP, payload: Buffer.alloc(8) }),
      buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28, 1) }),
      buildFrame({
        src: '192.0.2.1',
        dst: '203.0.113.7',
        fragOffset: 185,
        protocol: IPPROTO_TCP,
        payload: Buffer.from('0000000000000002', 'hex'),
      }),
    ];
    for (const f of frames) assertSkips(m, f, null);
  });
});

test('unreadable: IP frames whose headers cannot be read are counted under no policy, and pass unchanged', () => {
  withMarker(Marker.everything(), (m) => {
    const syn = buildFrame(v4);
    const shortIhl = Buffer.from(syn);
    shortIhl[14] = 0x44;
    const badVersion = Buffer.from(syn);
    badVersion[14] = 0x65;
    const frames = [
      // Too short to hold the headers it announces.
      syn.subarray(0, 40),
      shortIhl,
      badVersion,
      buildFrame({ ...v4, vlan: [{ id: 1, tpid: 0x88a8 }, 2, 3] }),
      buildFrame({ ...v6, ipv6Ext: Array.from({ length: 7 }, () => ({ type: 60 })) }),
    ];
    for (const f of frames) assertSkips(m, f, 'unreadable', { policyId: 0 });
  });
});

// ---------------------------------------------------------------------------------------
// Skip reasons: byte-identical output, exactly one counter

test('skip: SYN with data (TFO) is counted as payload, IPv4 and IPv6', () => {
  withMarker(Marker.everything(), (m) => {
    assertSkips(
      m,
      buildFrame({ ...withOpts(v4, LINUX_SYN_OPTIONS), payload: Buffer.from('GET / HTTP/1.1\r\n') }),
      'skipped_payload',
    );
    assertSkips(m, buildFrame({ ...v6, payload: Buffer.from('x') }), 'skipped_payload');
  });
});

test('skip: no room when the options already take more than 28 bytes', () => {
  withMarker(Marker.everything(), (m) => {
    assertSkips(m, buildFrame(withOpts(v4, Buffer.concat([LINUX_SYN_OPTIONS, Buffer.alloc(12, 1)]))), 'skipped_no_room');
    assertSkips(m, buildFrame(withOpts(v6, Buffer.alloc(40, 1))), 'skipped_no_room');
  });
});

/** The options of a macOS / BSD SYN: MSS, NOP, window scale, NOP, NOP, timestamps, SACK-permitted, EOL (23 bytes with the EOL, one byte of padding). */
const BSD_SYN_OPTIONS = Buffer.from('020405b4' + '01030306' + '0101080a' + '1122334400000000' + '04020000', 'hex');

test("marks a SYN whose option list ends in an EOL (the BSD and macOS layout): ours takes the EOL's place, the EOL and zeros follow", () => {
  assert.equal(BSD_SYN_OPTIONS.length, 24);
  withMarker(Marker.everything(), (m) => {
    const opt = tokenOption(KIND, EXID, TOKEN);
    const cases: [string, FrameSpec, Buffer][] = [
      ['BSD layout, IPv4', withOpts(v4, BSD_SYN_OPTIONS), Buffer.concat([BSD_SYN_OPTIONS.subarray(0, 22), opt, Buffer.alloc(2)])],
      [
        'BSD layout, IPv6 behind a VLAN tag',
        { ...withOpts(v6, BSD_SYN_OPTIONS), vlan: 5 },
        Buffer.concat([BSD_SYN_OPTIONS.subarray(0, 22), opt, Buffer.alloc(2)]),
      ],
      ['an EOL first', withOpts(v6, Buffer.from('00000000', 'hex')), Buffer.concat([opt, Buffer.alloc(4)])],
      [
        'bytes after the EOL that are not zero',
        withOpts(v4, Buffer.from('020405b400ffffff', 'hex')),
        Buffer.concat([Buffer.from('020405b4', 'hex'), opt, Buffer.alloc(4)]),
      ],
      [
        'an EOL at a word boundary, with 12 bytes of padding after it',
        withOpts(v4, Buffer.from('020405b4' + '00'.repeat(16), 'hex')),
        Buffer.concat([Buffer.from('020405b4', 'hex'), opt, Buffer.alloc(16)]),
      ],
    ];
    for (const [what, spec, want] of cases) {
      const { out, changed } = runCounted(m, buildFrame(spec));
      const expected = buildFrame({ ...spec, tcp: { ...spec.tcp!, checksum: 'full', options: want } });
      assert.ok(out.equals(expected), `${what}: marked frame differs:${hexDiff(out, expected)}`);
      const p = parseFrame(out);
      assert.deepEqual(p.errors, [], `${what}: ${p.errors.join('; ')}`);
      assert.equal(p.tcpChecksumOk, true, `${what}: TCP checksum`);
      if (p.family === 4) assert.equal(p.ipv4ChecksumOk, true, `${what}: IPv4 header checksum`);
      assert.deepEqual(findTokenOption(p, KIND, EXID), TOKEN, `${what}: token`);
      assert.deepEqual(changed, { [`${LO}/${POLICY}/marked`]: 1 }, `${what}: counters`);
    }
    // No room: 24 bytes of options plus ours fit, 32 do not, EOL or not.
    assertSkips(m, buildFrame(withOpts(v4, Buffer.concat([BSD_SYN_OPTIONS, Buffer.alloc(8)]))), 'skipped_no_room');
  });
});

test('skip: a SYN carrying TCP-AO (kind 29), whose MAC covers the options', () => {
  withMarker(Marker.everything(), (m) => {
    const ao = Buffer.from('1d10' + '0102' + '00112233445566778899aabb', 'hex');
    assertSkips(m, buildFrame(withOpts(v4, Buffer.concat([Buffer.from('020405b4', 'hex'), ao]))), 'skipped_tcp_ao');
    assertSkips(m, buildFrame(withOpts(v6, Buffer.concat([ao, Buffer.from('01010402', 'hex')]))), 'skipped_tcp_ao');
    // TCP MD5 (kind 19) signs the header without its options: marked.
    assertMarks(m, withOpts(v4, Buffer.from('0101' + '1312' + '00112233445566778899aabbccddeeff', 'hex')));
  });
});

test('skip: malformed options (length 0, length 1, past the end, no length byte)', () => {
  withMarker(Marker.everything(), (m) => {
    for (const hex of ['020005b4', '0101fd01', '0101fd08', '010101fd', '020405b4080a0000']) {
      assertSkips(m, buildFrame(withOpts(v4, Buffer.from(hex, 'hex'))), 'skipped_malformed');
    }
  });
});

test('skip: malformed headers (doff < 5, doff past the packet, IP length too short, trailing bytes)', () => {
  withMarker(Marker.everything(), (m) => {
    assertSkips(m, buildFrame({ ...v4, tcp: { ...v4.tcp!, doff: 4 } }), 'skipped_malformed');
    assertSkips(m, buildFrame({ ...v4, tcp: { ...v4.tcp!, doff: 8 } }), 'skipped_malformed');
    assertSkips(m, buildFrame({ ...withOpts(v4, LINUX_SYN_OPTIONS), ipLength: 40 }), 'skipped_malformed');
    // The IP length leaves 16 bytes of TCP header: the flags are there, the rest is not.
    assertSkips(m, buildFrame({ ...v6, ipLength: 16 }), 'skipped_malformed');
    assertSkips(m, Buffer.concat([buildFrame(v4), Buffer.alloc(6)]), 'skipped_malformed');
    assertSkips(m, Buffer.concat([buildFrame(v6), Buffer.alloc(2)]), 'skipped_malformed');
  });
});

test('skip: our option is already present; another ExID of the same kind is not ours', () => {
  withMarker(Marker.everything(), (m) => {
    const ours = tokenOption(KIND, EXID, Buffer.alloc(8, 0x55));
    assertSkips(m, buildFrame(withOpts(v4, Buffer.concat([Buffer.from('020405b4', 'hex'), ours]))), 'skipped_present');
    // Marking twice leaves the first mark alone.
    const once = m.run(buildFrame(v6));
    assertSkips(m, once, 'skipped_present');
    assertMarks(m, withOpts(v4, tokenOption(KIND, 0x1111, Buffer.alloc(8, 0x55))));
  });
});

test('skip: GSO skbs (gso_segs > 1, or gso_size set)', () => {
  withMarker(Marker.everything(), (m) => {
    assertSkips(m, buildFrame(v4), 'skipped_gso', { ctx: { gsoSegs: 2, gsoSize: 1448 } });
    assertSkips(m, buildFrame(v6), 'skipped_gso', { ctx: { gsoSegs: 1, gsoSize: 1448 } });
    // The same frame without GSO is marked: the context is what made the difference.
    assertMarks(m, v4, { ctx: {} });
  });
});

test('skip: an IPv6 SYN behind extension headers is counted under its policy; other traffic behind them is not counted', () => {
  withMarker(Marker.everything(), (m) => {
    const firstFragment = { type: 44, body: Buffer.from('000100000001', 'hex') }; // offset 0, M set
    for (const ext of [
      [{ type: 0 }],
      [{ type: 43 }],
      [{ type: 60 }],
      [{ type: 51 }],
      [firstFragment],
      [{ type: 0 }, { type: 60, body: Buffer.alloc(14) }],
    ]) {
      assertSkips(m, buildFrame({ ...withOpts(v6, LINUX_SYN_OPTIONS), ipv6Ext: ext }), 'skipped_ipv6_ext_header');
    }
    // Not a SYN, or nothing to read: pass uncounted (MLD reports carry a hop-by-hop header).
    const mld = buildFrame({
      src: 'fe80::1',
      dst: 'ff02::16',
      ipv6Ext: [{ type: 0, body: Buffer.from('050200000100', 'hex') }],
      protocol: 58,
      payload: Buffer.alloc(28),
    });
    const later = { type: 44, body: Buffer.from('00080000000a', 'hex') }; // offset 1
    const v6Addrs = { src: v6.src, dst: v6.dst };
    const frames = [
      mld,
      buildFrame({ ...v6, tcp: { ...v6.tcp!, flags: TCP_ACK }, ipv6Ext: [{ type: 0 }] }),
      buildFrame({
        ...v6Addrs,
        ipv6Ext: [later],
        protocol: IPPROTO_TCP,
        payload: Buffer.from('9c4001bb0000000100000000500200000000', 'hex'),
      }),
      buildFrame({ ...v6Addrs, protocol: 50, payload: Buffer.alloc(40, 3) }),
      buildFrame({ ...v6Addrs, ipv6Ext: [{ type: 60 }], protocol: 50, payload: Buffer.alloc(40, 3) }),
    ];
    for (const f of frames) assertSkips(m, f, null);
    // More extension headers than the marker walks: it cannot tell what follows.
    const deep = Array.from({ length: 7 }, () => ({ type: 60 }));
    assertSkips(m, buildFrame({ ...v6, ipv6Ext: deep }), 'unreadable', { policyId: 0 });
    // No policy for the destination: counted as that, like any other SYN.
    assertSkips(m, buildFrame({ ...v6, dst: '2001:db8:1::7', ipv6Ext: [{ type: 0 }] }), 'skipped_ipv6_ext_header');
  });
  withMarker(new Marker().policy().rule(LO, '2001:db8:9::/48'), (m) => {
    assertSkips(m, buildFrame({ ...v6, ipv6Ext: [{ type: 0 }] }), 'skipped_no_policy', { policyId: 0 });
  });
});

test('skip: a SYN in the first fragment of a fragmented IPv4 datagram', () => {
  withMarker(Marker.everything(), (m) => {
    assertSkips(m, buildFrame({ ...v4, mf: true }), 'skipped_fragment');
  });
});

test('skip: an encapsulated skb (skb->encapsulation set by a tunnel program before us)', () => {
  withMarker(Marker.everything(ENCAP_OBJ, 'nt_test_encap'), (m) => {
    assertSkips(m, buildFrame(withOpts(v4, LINUX_SYN_OPTIONS)), 'skipped_encapsulated');
  });
});

// ---------------------------------------------------------------------------------------
// Real SYNs in network namespaces

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

function ifindexIn(ns: string, dev: string): number {
  const links = JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev])) as Array<{ ifindex: number }>;
  const idx = links[0]?.ifindex;
  if (!idx) throw new Error(`no ifindex for ${dev} in ${ns}`);
  return idx;
}

function inNs(ns: string, args: string[]): string {
  return sh('nsenter', [`--net=/var/run/netns/${ns}`, '--', ...args]);
}

/** Capture `count` TCP packets on `dev` in `ns` while `act` runs; returns the frames. */
async function capture(ns: string, dev: string, file: string, count: number, act: () => Promise<void>): Promise<Buffer[]> {
  const dump = spawn(
    'ip',
    ['netns', 'exec', ns, 'tcpdump', '--immediate-mode', '-i', dev, '-U', '-n', '-c', String(count), '-w', file, 'tcp'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  const exited = new Promise<number | null>((resolve) => dump.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10000);
    dump.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  try {
    await act();
    const t = setTimeout(() => dump.kill('SIGINT'), 5000);
    await exited;
    clearTimeout(t);
  } finally {
    if (dump.exitCode === null) dump.kill('SIGINT');
  }
  const cap = parsePcap(readFileSync(file));
  return cap.packets.map((r) => toEthernet(cap.linkType, r.data));
}

/** connect() from `ns`; 'refused' means the peer's stack accepted our SYN and answered RST. */
function connectFrom(ns: string, host: string, port: number): string {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port}`], {
      stdio: 'pipe',
    });
    return 'connected';
  } catch (e) {
    const status = (e as { status?: number }).status;
    return status === 124 ? 'timeout' : 'refused';
  }
}

test('real SYNs through a veth pair: marked, and accepted by the peer with tx checksum offload on (CHECKSUM_PARTIAL) and off', async () => {
  const tag = randomBytes(3).toString('hex');
  const nsA = `nt-a-${process.pid}-${tag}`;
  const nsB = `nt-b-${process.pid}-${tag}`;
  const devA = `nta-${tag}`;
  const devB = `ntb-${tag}`;
  const devMtu = `ntm-${tag}`;
  const m = new Marker();
  const dir = path.join('/tmp', `netoken-marker-${process.pid}-${tag}`);
  mkdirSync(dir);
  try {
    sh('ip', ['netns', 'add', nsA]);
    sh('ip', ['netns', 'add', nsB]);
    sh('ip', ['-n', nsA, 'link', 'add', devA, 'type', 'veth', 'peer', 'name', devB, 'netns', nsB]);
    for (const [ns, dev, v4a, v6a] of [
      [nsA, devA, '10.231.0.1/24', 'fd00:231::1/64'],
      [nsB, devB, '10.231.0.2/24', 'fd00:231::2/64'],
    ] as const) {
      sh('ip', ['-n', ns, 'addr', 'add', v4a, 'dev', dev]);
      sh('ip', ['-n', ns, 'addr', 'add', v6a, 'dev', dev, 'nodad']);
      sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const ifA = ifindexIn(nsA, devA);
    m.policy().rule(ifA, '10.231.0.0/24').rule(ifA, 'fd00:231::/64');
    inNs(nsA, ['node', HELPER, 'attach', MARKER_OBJ, m.pinDir, 'nt_mark_egress', String(ifA), path.join(m.pinDir, 'link')]);

    let marked = 0;
    for (const offload of ['on', 'off'] as const) {
      sh('ip', ['netns', 'exec', nsA, 'ethtool', '-K', devA, 'tx', offload]);
      for (const peer of ['10.231.0.2', 'fd00:231::2']) {
        const file = path.join(dir, `${offload}-${peer.replace(/:/g, '_')}.pcap`);
        let verdict = '';
        const frames = await capture(nsB, devB, file, 2, async () => {
          verdict = connectFrom(nsA, peer, 443);
        });
        const what = `tx ${offload}, ${peer}`;
        assert.equal(
          verdict,
          'refused',
          `${what}: the peer must answer our SYN with RST (a bad checksum makes it drop the SYN: ${verdict})`,
        );
        const syn = frames.map(parseFrame).find((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
        assert.ok(syn?.tcp, `${what}: no SYN captured`);
        assert.deepEqual(findTokenOption(syn, KIND, EXID), TOKEN, `${what}: token option in the captured SYN`);
        assert.equal(syn.tcp.optionsError, null);
        if (syn.family === 4) assert.equal(syn.ipv4ChecksumOk, true, `${what}: IPv4 header checksum`);
        if (offload === 'on') {
          // CHECKSUM_PARTIAL: the field must be exactly the pseudo-header seed for the new length.
          assert.equal(
            syn.tcpChecksumIsPseudoSeed,
            true,
            `${what}: check field 0x${syn.tcp.checksum.toString(16)} is not the pseudo-header seed of the grown segment`,
          );
        } else {
          assert.equal(syn.tcpChecksumOk, true, `${what}: full TCP checksum`);
        }
        marked++;
      }
    }
    assert.equal(m.counter(ifA, POLICY, 'marked'), BigInt(marked), 'marked counter for the veth');

    // The device's MTU, through test_run on a device of this namespace: a 68-byte MTU
    // takes a bare SYN plus 12 bytes (66 <= 68 + 14) but not one with 20 option bytes.
    sh('ip', ['-n', nsA, 'link', 'add', devMtu, 'mtu', '68', 'type', 'veth', 'peer', 'name', `${devMtu}p`, 'mtu', '68']);
    const ifD = ifindexIn(nsA, devMtu);
    m.rule(ifD, '203.0.113.0/24');
    const runIn = (frame: Buffer): Buffer => {
      const r = JSON.parse(
        inNs(nsA, [
          'node',
          HELPER,
          'run',
          MARKER_OBJ,
          m.pinDir,
          'nt_mark_egress',
          frame.toString('hex'),
          skbCtx({ ifindex: ifD }).toString('hex'),
        ]),
      ) as { retval: number; data: string };
      assert.equal(r.retval, TcAction.UNSPEC);
      return Buffer.from(r.data, 'hex');
    };
    let before = m.counters();
    const small = runIn(buildFrame(v4));
    assert.ok(small.equals(expectMarked(v4)), `bare SYN on the 68-byte-MTU device:${hexDiff(small, expectMarked(v4))}`);
    assert.deepEqual(delta(before, m.counters()), { [`${ifD}/${POLICY}/marked`]: 1 });
    before = m.counters();
    const big = buildFrame(withOpts(v4, LINUX_SYN_OPTIONS));
    assert.ok(runIn(big).equals(big), 'a SYN that would exceed the MTU must pass unchanged');
    assert.deepEqual(delta(before, m.counters()), { [`${ifD}/${POLICY}/skipped_mtu`]: 1 });
  } finally {
    for (const ns of [nsA, nsB]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* not created */
      }
    }
    m.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('when the tail call into the SYN program cannot be made, a SYN passes unchanged and counts error_tail_call; other traffic passes uncounted', () => {
  const m = Marker.everything(ENCAP_OBJ, 'nt_test_mark_no_jump');
  withMarker(m, () => {
    assertSkips(m, buildFrame(v4), 'error_tail_call', { policyId: 0 });
    assertSkips(m, buildFrame(withOpts(v6, LINUX_SYN_OPTIONS)), 'error_tail_call', { policyId: 0 });
    assertSkips(m, buildFrame({ ...v4, tcp: { ...v4.tcp!, flags: TCP_ACK } }), null);
    assertSkips(m, buildFrame({ src: v4.src, dst: v4.dst, protocol: IPPROTO_UDP, payload: Buffer.alloc(8) }), null);
  });
});
