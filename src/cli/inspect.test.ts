/**
 * `netoken inspect --read`: crafted SYNs in pcap files (Ethernet, and Linux cooked with
 * directions) judged with Static and Keyed policy files; every verdict, the summary, the JSON
 * form, what keeps keys out of the output, and the errors a user gets for bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIND_ALL, keyedToken } from '../lib/siphash.js';
import { TCP_ACK, TCP_SYN, buildFrame, tokenOption } from '../lib/packet.js';
import { LINKTYPE_LINUX_SLL, PACKET_OUTGOING, parsePcap, pcapHeader, pcapRecord, sllHeader, writePcap } from '../lib/pcap.js';
import { inspectConfig, UsageError, type RawOptions } from './config.js';
import { runInspect, type Summary, type SynRecord } from './inspect.js';
import { NT_OPT_EXID_DEFAULT as EXID, NT_OPT_KIND_DEFAULT as KIND } from '../lib/abi.js';

const EPOCH = 60;
/** 10 s into an epoch: a token of the next epoch means a clock at least 50 s ahead. */
const T0 = (29_000_000 * EPOCH + 10) * 1000;

const dir = mkdtempSync(path.join(tmpdir(), 'nttest-inspect-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const f = path.join(dir, name);
  writeFileSync(f, content, { mode: 0o600 });
  return f;
}

function policyFile(name: string, mode: 'Static' | 'Keyed', keys: Record<string, Buffer>, extra = ''): string {
  const token =
    mode === 'Keyed'
      ? `{mode: Keyed, secretRef: {name: ${name}-key}, epochSeconds: ${EPOCH}}`
      : `{mode: Static, secretRef: {name: ${name}-key}}`;
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  token: ${token}
  ingress: {action: Enforce, ports: [443]}${extra}
---
apiVersion: v1
kind: Secret
metadata: {name: ${name}-key}
type: Opaque
data:
${Object.entries(keys)
  .map(([k, v]) => `  ${k}: ${v.toString('base64')}`)
  .join('\n')}
`;
}

const FLOW = { src: '192.0.2.10', dst: '192.0.2.20', dport: 443 };

function syn(sport: number, options: Buffer, seq = 1000 + sport, flags = TCP_SYN): Buffer {
  return buildFrame({ src: FLOW.src, dst: FLOW.dst, tcp: { sport, dport: FLOW.dport, seq, flags, options } });
}

/** Ethernet pcap whose records are all stamped `atMs`. */
function pcapAt(frames: Buffer[], atMs: number): Buffer {
  return Buffer.concat([
    pcapHeader(1),
    ...frames.map((data) =>
      pcapRecord({ tsSec: Math.floor(atMs / 1000), tsNsec: (atMs % 1000) * 1e6, data, origLen: data.length }),
    ),
  ]);
}

async function inspect(
  o: RawOptions,
): Promise<{ code: number; out: string; err: string; syns: SynRecord[]; summary: Summary | undefined }> {
  let out = '';
  let err = '';
  const code = await runInspect(
    inspectConfig(o),
    (s) => (out += s),
    (s) => (err += s),
  );
  const lines =
    o.output === 'json'
      ? out
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as SynRecord | Summary)
      : [];
  return {
    code,
    out,
    err,
    syns: lines.filter((l): l is SynRecord => l.type === 'syn'),
    summary: lines.find((l): l is Summary => l.type === 'summary'),
  };
}

function assertNoKeys(text: string, keys: Buffer[]): void {
  for (const k of keys) {
    for (const enc of [k.toString('hex'), k.toString('base64'), k.toString('base64url')])
      assert.ok(!text.includes(enc), 'a key appears in the output');
  }
}

test('Static: valid, previous-key, next-key, invalid, missing, malformed, a wrong length; SYN-ACKs are not SYNs', async () => {
  const cur = randomBytes(8);
  const prev = randomBytes(8);
  const next = randomBytes(8);
  const pf = file('static.yaml', policyFile('edge', 'Static', { current: cur, previous: prev, next }));
  const bad = Buffer.alloc(12);
  tokenOption(KIND, EXID, randomBytes(8)).copy(bad);
  bad.writeUInt8(8, 1); // length 8: our kind and ExID, a length the verifier refuses
  const frames = [
    syn(40001, Buffer.concat([Buffer.from('020405b40101', 'hex'), tokenOption(KIND, EXID, cur)])),
    syn(40002, tokenOption(KIND, EXID, prev)),
    syn(40003, tokenOption(KIND, EXID, next)),
    syn(40004, tokenOption(KIND, EXID, randomBytes(8))),
    syn(40005, Buffer.from('020405b4', 'hex')),
    syn(40006, Buffer.from('0101fd01', 'hex')), // an option of length 1: the walk stops there
    syn(40007, bad.subarray(0, 8)),
    syn(40008, tokenOption(KIND, 0x1234, cur)), // another ExID: not ours
    syn(40009, tokenOption(KIND, EXID, cur), 1, TCP_SYN | TCP_ACK),
  ];
  const r = await inspect({ read: file('static.pcap', writePcap(frames, 1_700_000_000)), policyFile: pf, output: 'json' });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(
    r.syns.map((s) => [s.sport, s.verdict]),
    [
      [40001, 'valid'],
      [40002, 'previous-key'],
      [40003, 'next-key'],
      [40004, 'invalid'],
      [40005, 'missing'],
      [40006, 'malformed'],
      [40007, 'invalid'],
      [40008, 'missing'],
    ],
  );
  const first = r.syns[0]!;
  assert.deepEqual(
    {
      src: first.src,
      dst: first.dst,
      dport: first.dport,
      family: first.family,
      direction: first.direction,
      policy: first.policy,
      key: first.key,
    },
    { src: FLOW.src, dst: FLOW.dst, dport: 443, family: 4, direction: null, policy: 'edge', key: 'current' },
  );
  assert.deepEqual(first.option, { kind: KIND, exid: EXID, length: 12 });
  assert.match(r.syns[6]!.detail ?? '', /option length 8, want 12/);
  assert.equal(r.summary?.syns, 8);
  assert.equal(r.summary?.final, true);
  assert.deepEqual(
    Object.entries(r.summary!.verdicts).filter(([, n]) => n > 0),
    [
      ['valid', 1],
      ['previous-key', 1],
      ['next-key', 1],
      ['invalid', 2],
      ['missing', 2],
      ['malformed', 1],
    ],
  );
  assertNoKeys(r.out + r.err, [cur, prev, next]);

  const table = await inspect({ read: path.join(dir, 'static.pcap'), policyFile: pf });
  assert.match(table.err, /reading .*static\.pcap; policy edge \(Static, option 253\/0x4e54, keys: current, previous, next\)/);
  assert.match(table.out, /^TIME +INTERFACE +DIR +SOURCE +DESTINATION +OPTION +VERDICT +DETAIL$/m);
  assert.match(table.out, /192\.0\.2\.10:40002 +192\.0\.2\.20:443 +253\/0x4e54 +previous-key +key previous/);
  assert.match(
    table.out,
    /^summary: 8 SYN\(s\) in [\d.]+ s: valid 1, previous-key 1, next-key 1, invalid 2, missing 2, malformed 1$/m,
  );
  assertNoKeys(table.out + table.err, [cur, prev, next]);
});

test('Keyed: valid, previous and next epoch with the clock offset, previous and next key, forged, on IPv4 and IPv6', async () => {
  const cur = randomBytes(16);
  const prev = randomBytes(16);
  const next = randomBytes(16);
  const pf = file('keyed.yaml', policyFile('api', 'Keyed', { current: cur, previous: prev, next }));
  const epoch = BigInt(Math.floor(T0 / 1000 / EPOCH));
  const opt = (key: Buffer, sport: number, e: bigint, src = FLOW.src, dst = FLOW.dst): Buffer =>
    tokenOption(KIND, EXID, keyedToken(key, { src, dst, sport, dport: 443, seq: 1000 + sport }, BIND_ALL, e));
  const v6 = { src: '2001:db8::10', dst: '2001:db8::20' };
  const frames = [
    syn(41001, opt(cur, 41001, epoch)),
    syn(41002, opt(cur, 41002, epoch - 1n)),
    syn(41003, opt(cur, 41003, epoch + 1n)),
    syn(41004, opt(prev, 41004, epoch)),
    syn(41005, opt(next, 41005, epoch + 1n)),
    syn(41006, opt(cur, 41005, epoch)), // the token of port 41005 on port 41006: a replay on a new 4-tuple
    syn(41007, opt(cur, 41007, epoch - 2n)),
    buildFrame({ ...v6, tcp: { sport: 41008, dport: 443, seq: 1000 + 41008, options: opt(cur, 41008, epoch, v6.src, v6.dst) } }),
  ];
  const r = await inspect({ read: file('keyed.pcap', pcapAt(frames, T0)), policyFile: pf, output: 'json' });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(
    r.syns.map((s) => [s.sport, s.verdict, s.key ?? null, s.epochOffset ?? null]),
    [
      [41001, 'valid', 'current', 0],
      [41002, 'previous-epoch', 'current', -1],
      [41003, 'next-epoch', 'current', 1],
      [41004, 'previous-key', 'previous', 0],
      [41005, 'next-key', 'next', 1],
      [41006, 'invalid', null, null],
      [41007, 'invalid', null, null],
      [41008, 'valid', 'current', 0],
    ],
  );
  assert.equal(
    r.syns[1]!.clockOffsetSeconds,
    -10,
    'a previous-epoch token 10 s into the epoch: the sender is at least 10 s behind',
  );
  assert.equal(r.syns[2]!.clockOffsetSeconds, 50, 'a next-epoch token 10 s into a 60 s epoch: the sender is at least 50 s ahead');
  assert.deepEqual([r.syns[1]!.withinClockSkew, r.syns[2]!.withinClockSkew], [false, false], 'both beyond the default 5 s grace');
  assert.equal(r.syns[0]!.withinClockSkew, undefined, 'the current epoch has no offset');
  assert.equal(r.syns[7]!.family, 6);
  assert.equal(r.syns[7]!.src, v6.src);
  assert.equal(r.syns[0]!.time, new Date(T0).toISOString(), 'the verdict is taken at the capture time in the file');
  assert.match(r.syns[5]!.detail ?? '', /matches none of the keys \(current, previous, next\)/);
  assertNoKeys(r.out + r.err, [cur, prev, next]);

  // 2 s after the boundary, the previous epoch's token is within the 5 s grace; 3 s before
  // the next boundary, the next epoch's too. The table says so.
  const start = Number(epoch) * EPOCH * 1000;
  const near = [syn(41002, opt(cur, 41002, epoch - 1n))];
  const late = await inspect({ read: file('near.pcap', pcapAt(near, start + 2000)), policyFile: pf, output: 'json' });
  assert.deepEqual(
    [late.syns[0]!.verdict, late.syns[0]!.clockOffsetSeconds, late.syns[0]!.withinClockSkew],
    ['previous-epoch', -2, true],
  );
  const ahead = await inspect({
    read: file('ahead.pcap', pcapAt([syn(41003, opt(cur, 41003, epoch))], start - 3000)),
    policyFile: pf,
  });
  assert.match(ahead.out, /next-epoch +epoch \+1; sender clock ≥3s ahead; within the clock-skew grace$/m);
  assert.match(ahead.err, /keys: current, previous, next, clock-skew grace 5 s\)/);

  // Without `next` and `previous` in the Secret those SYNs are invalid.
  const only = file('keyed-only.yaml', policyFile('api', 'Keyed', { current: cur }));
  const r2 = await inspect({ read: path.join(dir, 'keyed.pcap'), policyFile: only, output: 'json', count: '5' });
  assert.deepEqual(
    r2.syns.map((s) => s.verdict),
    ['valid', 'previous-epoch', 'next-epoch', 'invalid', 'invalid'],
    '--count 5 stops after five SYNs',
  );
  assert.equal(r2.summary?.syns, 5);
});

test('without a policy: whether SYNs carry an experimental option; a cooked capture gives directions; --pcap-out keeps the SYNs', async () => {
  const frames = [
    syn(42001, tokenOption(KIND, EXID, randomBytes(8))),
    syn(42002, Buffer.from('020405b4', 'hex')),
    syn(42003, tokenOption(254, 0xabcd, randomBytes(8))),
  ];
  const cooked = Buffer.concat([
    pcapHeader(LINKTYPE_LINUX_SLL),
    ...frames.map((f, i) => {
      const data = Buffer.concat([
        sllHeader(i === 0 ? PACKET_OUTGOING : 0, 1, Buffer.from('020000000001', 'hex'), 0x0800),
        f.subarray(14),
      ]);
      return pcapRecord({ tsSec: 1_700_000_000, tsNsec: i, data, origLen: data.length });
    }),
  ]);
  const out = path.join(dir, 'kept.pcap');
  const r = await inspect({ read: file('cooked.pcap', cooked), output: 'json', pcapOut: out });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(
    r.syns.map((s) => [s.sport, s.direction, s.verdict, s.option]),
    [
      [42001, 'out', 'unverified', { kind: 253, exid: EXID, length: 12 }],
      [42002, 'in', 'missing', null],
      [42003, 'in', 'unverified', { kind: 254, exid: 0xabcd, length: 12 }],
    ],
  );
  const kept = parsePcap(readFileSync(out));
  assert.equal(kept.linkType, LINKTYPE_LINUX_SLL);
  assert.equal(kept.packets.length, 3);
  const again = await inspect({ read: out, output: 'json' });
  assert.deepEqual(
    again.syns.map((s) => [s.sport, s.direction, s.verdict]),
    r.syns.map((s) => [s.sport, s.direction, s.verdict]),
    'the kept file reads the same',
  );
});

test('bad input gets a clear error that shows no key', async () => {
  const key = randomBytes(8);
  const pcap = file('one.pcap', writePcap([syn(43001, tokenOption(KIND, EXID, key))]));
  const two = file(
    'two.yaml',
    `${policyFile('a', 'Static', { current: key })}---\n${policyFile('b', 'Static', { current: key })}`,
  );
  const short = file('short.yaml', policyFile('c', 'Static', { current: key.subarray(0, 5) }));
  const noSecret = file('nosecret.yaml', policyFile('d', 'Static', { current: key }).split('---')[0] as string);
  const cases: [RawOptions, RegExp][] = [
    [{}, /exactly one of --interface NAME .* and --read FILE\.pcap/],
    [{ interface: 'eth0', read: pcap }, /exactly one of/],
    [{ read: pcap, duration: '5s' }, /--duration bounds a live capture; with --read use --count/],
    [{ read: pcap, count: '0' }, /--count must be a whole number of SYNs, at least 1/],
    [{ read: pcap, output: 'yaml' }, /--output must be table or json/],
    [{ read: pcap, kubeconfig: '/nonexistent' }, /--kubeconfig needs --policy NAME/],
    [{ read: pcap, policyFile: two }, /holds 2 policies \(a, b\): choose one with --policy/],
    [{ read: pcap, policyFile: two, policy: 'z' }, /has no TokenPolicy "z" \(it has: a, b\)/],
    [{ read: pcap, policyFile: short }, /Secret "c-key"\): current holds 5 bytes; a Static token needs exactly 8/],
    [{ read: pcap, policyFile: noSecret }, /Secret "d-key" named by TokenPolicy "d" is not in nosecret\.yaml/],
    [{ read: file('junk.pcap', Buffer.from('not a capture at all, no')) }, /junk\.pcap: pcap: unknown magic/],
    [{ read: path.join(dir, 'missing.pcap') }, /cannot read .*missing\.pcap/],
  ];
  for (const [o, want] of cases) {
    let caught: unknown;
    try {
      await inspect(o);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof Error, `${JSON.stringify(o)} is refused`);
    assert.match(caught.message, want, JSON.stringify(o));
    assert.ok(
      caught instanceof UsageError || /holds 5 bytes/.test(caught.message),
      `${JSON.stringify(o)}: a usage error (exit 2)`,
    );
    assertNoKeys(caught.message, [key]);
  }
});
