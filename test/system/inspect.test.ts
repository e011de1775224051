/**
 * `netoken inspect` on live interfaces in network namespaces: a client whose agent marks
 * with the right key and with a wrong one, real handshakes (valid, forged and unmarked
 * SYNs) and raw SYNs of the previous key and of the next epoch, judged where they arrive;
 * the outgoing side seen from the client; the kept pcap read back with the same verdicts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { buildFrame, tokenOption } from '../../src/lib/packet.js';
import { LINKTYPE_LINUX_SLL, parsePcap } from '../../src/lib/pcap.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import type { Summary, SynRecord } from '../../src/cli/inspect.js';
import { BIN, agentIn, type AgentRun } from '../lib/agent.js';
import { createTopology, exec, spawnIn, type Topology } from '../lib/netns.js';
import { sendFrame } from '../lib/raw-send.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { NT_OPT_EXID_DEFAULT as EXID, NT_OPT_KIND_DEFAULT as KIND } from '../../src/lib/abi.js';

/** Long epochs: the raw tokens below are made a moment before the SYN is seen. */
const EPOCH_SECONDS = 3600;

const K1 = randomBytes(16);
const KPREV = randomBytes(16);
const WRONG = randomBytes(16);

function keyed(name: string, secret: string, spec: string): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  token: {mode: Keyed, secretRef: {name: ${secret}}, epochSeconds: ${EPOCH_SECONDS}}
${spec.replace(/^/gm, '  ')}
`;
}

function secret(name: string, keys: Record<string, Buffer>): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}}
type: Opaque
data:
${Object.entries(keys)
  .map(([k, v]) => `  ${k}: ${v.toString('base64')}`)
  .join('\n')}
`;
}

interface InspectRun {
  child: ChildProcess;
  /** resolves with stdout, stderr and the exit code once it exits */
  done: Promise<{ code: number | null; out: string; err: string }>;
}

/** Starts `netoken inspect` in `ns` and resolves once it watches (it says so on stderr). */
async function startInspect(ns: string, args: string[]): Promise<InspectRun> {
  const child = spawnIn(ns, process.execPath, [BIN, 'inspect', ...args]);
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => (out += d));
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
    child.once('close', (code) => resolve({ code, out, err })),
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`inspect did not start within 10 s: ${err}`)), 10_000);
    child.stderr?.on('data', (d: string) => {
      err += d;
      if (err.includes('watching ')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`inspect exited with ${code} before watching: ${err}`));
    });
  });
  return { child, done };
}

async function finish(run: InspectRun, what: string): Promise<{ syns: SynRecord[]; summary: Summary; out: string; err: string }> {
  const timer = setTimeout(() => run.child.kill('SIGINT'), 20_000);
  const r = await run.done;
  clearTimeout(timer);
  assert.equal(r.code, 0, `${what}: inspect exit code\n${r.err}`);
  const lines = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as SynRecord | Summary);
  const summary = lines.find((l): l is Summary => l.type === 'summary' && l.final);
  assert.ok(summary, `${what}: a final summary\n${r.out}`);
  return { syns: lines.filter((l): l is SynRecord => l.type === 'syn'), summary, out: r.out, err: r.err };
}

function assertNoKeys(text: string): void {
  for (const k of [K1, KPREV, WRONG]) {
    for (const enc of [k.toString('hex'), k.toString('base64'), k.toString('base64url')])
      assert.ok(!text.includes(enc), "a key appears in inspect's output");
  }
}

const topologies: Topology[] = [];
const agents: AgentRun[] = [];
const servers: TcpServer[] = [];
const dir = mkdtempSync(path.join(tmpdir(), 'nttest-inspect-'));
after(async () => {
  for (const a of agents) await a.cleanup();
  for (const s of servers) await s.stop();
  for (const t of topologies) await t.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('netoken inspect on live interfaces', () => {
  test('the receiver sees each verdict: right key, wrong key, unmarked, previous key, next epoch; the sender sees its SYNs go out', async () => {
    const t = await createTopology({ name: 'insp', kind: 'pair', ipv6: true });
    topologies.push(t);
    const good = await startServer(t.server.ns, { port: 0 });
    const forged = await startServer(t.server.ns, { port: 0 });
    const plain = await startServer(t.server.ns, { port: 0 });
    servers.push(good, forged, plain);

    // A second server address for the forged policy: one prefix of two policies would conflict.
    const alt = t.server.ipv4.replace(/\.\d+$/, '.200');
    await exec(t.server.ns, 'ip', ['addr', 'add', `${alt}/${t.server.ipv4Cidr.split('/')[1]}`, 'dev', t.server.dev]);
    // The client marks the good port with K1 and the forged port with a key nobody accepts.
    const agent = agentIn(t.client.ns, 'insp');
    agents.push(agent);
    agent.writePolicy(
      [
        keyed(
          'good',
          'good-key',
          `interfaces: {names: [${t.client.dev}]}
egress: {destinations: [{cidr: ${t.server.ipv4}/32, ports: [${good.port}]}, {cidr: "${t.server.ipv6}/128", ports: [${good.port}]}]}`,
        ),
        secret('good-key', { current: K1 }),
        keyed(
          'forged',
          'forged-key',
          `interfaces: {names: [${t.client.dev}]}
egress: {destinations: [{cidr: ${alt}/32, ports: [${forged.port}]}]}`,
        ),
        secret('forged-key', { current: WRONG }),
      ].join('---\n'),
    );
    await agent.start();
    await agent.waitStatus((s) => s.ready && s.hooks.length === 1 && s.policies.every((p) => p.id > 0), 20_000, 'the marker');

    // What the receiver judges with: K1 current, KPREV previous.
    const policyFile = path.join(dir, 'guard.yaml');
    writeFileSync(
      policyFile,
      [
        keyed('guard', 'guard-key', `ingress: {action: Monitor, ports: [${good.port}, ${forged.port}, ${plain.port}]}`),
        secret('guard-key', { current: K1, previous: KPREV }),
      ].join('---\n'),
      { mode: 0o600 },
    );
    const kept = path.join(dir, 'seen.pcap');
    const receiver = await startInspect(t.server.ns, [
      '-i',
      t.server.dev,
      '--policy-file',
      policyFile,
      '-o',
      'json',
      '--count',
      '6',
      '-w',
      kept,
    ]);
    const sender = await startInspect(t.client.ns, ['-i', 'any', '-o', 'json', '--count', '1']);

    const r4 = await connect(t.client.ns, t.server.ipv4, good.port);
    const r6 = await connect(t.client.ns, t.server.ipv6!, good.port);
    const rForged = await connect(t.client.ns, alt, forged.port);
    const rPlain = await connect(t.client.ns, t.server.ipv4, plain.port);
    assert.ok(r4.ok && r6.ok && rForged.ok && rPlain.ok, 'Monitor refuses nothing: every handshake completes');

    // Raw SYNs from the client's address: a token of the previous key, and one of the next epoch.
    const raw = (sport: number, key: Buffer, epochDelta: bigint): Buffer => {
      const flow = { src: t.client.ipv4, dst: t.server.ipv4, sport, dport: good.port, seq: 7000 + sport };
      const value = keyedToken(key, flow, BIND_ALL, epochAt(Date.now(), EPOCH_SECONDS) + epochDelta);
      return buildFrame({
        srcMac: t.client.mac,
        dstMac: t.server.mac,
        src: flow.src,
        dst: flow.dst,
        tcp: { sport, dport: good.port, seq: flow.seq, options: tokenOption(KIND, EXID, value) },
      });
    };
    await sendFrame(t.client.ns, t.client.dev, raw(51001, KPREV, 0n));
    await sendFrame(t.client.ns, t.client.dev, raw(51002, K1, 1n));

    const rx = await finish(receiver, 'receiver');
    const verdictOf = (pred: (s: SynRecord) => boolean): string[] => rx.syns.filter(pred).map((s) => s.verdict);
    assert.equal(rx.syns.length, 6, rx.out);
    assert.deepEqual(
      verdictOf((s) => s.dport === good.port && s.family === 4 && s.sport !== 51001 && s.sport !== 51002),
      ['valid'],
      'the right key, IPv4',
    );
    assert.deepEqual(
      verdictOf((s) => s.dport === good.port && s.family === 6),
      ['valid'],
      'the right key, IPv6',
    );
    assert.deepEqual(
      verdictOf((s) => s.dport === forged.port),
      ['invalid'],
      'a real handshake with a forged token',
    );
    assert.deepEqual(
      verdictOf((s) => s.dport === plain.port),
      ['missing'],
      'an unmarked handshake',
    );
    assert.deepEqual(
      verdictOf((s) => s.sport === 51001),
      ['previous-key'],
    );
    assert.deepEqual(
      verdictOf((s) => s.sport === 51002),
      ['next-epoch'],
    );
    const next = rx.syns.find((s) => s.sport === 51002)!;
    assert.ok(
      next.clockOffsetSeconds! > 0 && next.clockOffsetSeconds! <= EPOCH_SECONDS,
      `a next-epoch token: the sender is ahead by ${next.clockOffsetSeconds} s at least`,
    );
    for (const s of rx.syns) {
      assert.equal(s.direction, 'in');
      assert.equal(s.interface, t.server.dev);
      assert.equal(s.policy, 'guard');
      assert.equal(s.src, s.family === 4 ? t.client.ipv4 : t.client.ipv6);
    }
    assert.deepEqual(
      Object.entries(rx.summary.verdicts)
        .filter(([, n]) => n > 0)
        .sort(),
      [
        ['invalid', 1],
        ['missing', 1],
        ['next-epoch', 1],
        ['previous-key', 1],
        ['valid', 2],
      ],
    );
    assert.equal(rx.summary.droppedByKernel, 0);
    assertNoKeys(rx.out + rx.err);

    const tx = await finish(sender, 'sender');
    assert.equal(tx.syns.length, 1);
    assert.deepEqual(
      [tx.syns[0]!.direction, tx.syns[0]!.interface, tx.syns[0]!.verdict, tx.syns[0]!.option],
      ['out', t.client.dev, 'unverified', { kind: KIND, exid: EXID, length: 12 }],
      "the first SYN the client sent carries the marker's option, seen on its way out",
    );

    // The kept capture: Linux cooked frames, read back with the same verdicts and directions.
    const pcap = parsePcap(readFileSync(kept));
    assert.equal(pcap.linkType, LINKTYPE_LINUX_SLL);
    assert.equal(pcap.packets.length, 6);
    const again = await startInspectFile(t.server.ns, ['-r', kept, '--policy-file', policyFile, '-o', 'json']);
    assert.deepEqual(
      again.map((s) => [s.sport, s.direction, s.verdict]),
      rx.syns.map((s) => [s.sport, s.direction, s.verdict]),
    );
  });

  test('a device that does not exist, and a capture without the right to one, are refused clearly', async () => {
    const t = topologies[0]!;
    const r = await runInspect(t.server.ns, ['-i', 'nosuch0', '-c', '1']);
    assert.equal(r.code, 2);
    assert.match(r.err, /no interface "nosuch0" in this network namespace \(there are: .*lo/);
    // Without CAP_NET_RAW (and as another user) the socket is refused, and the message says what it needs.
    const unpriv = await runInspect(
      t.server.ns,
      ['-i', 'lo', '-c', '1'],
      ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'],
    );
    assert.equal(unpriv.code, 1, unpriv.err);
    assert.match(unpriv.err, /socket: Operation not permitted .*watching an interface needs root \(CAP_NET_RAW\)/);
  });
});

async function runInspect(
  ns: string,
  args: string[],
  prefix: string[] = [],
): Promise<{ code: number | null; out: string; err: string }> {
  const [cmd, ...rest] = prefix.length ? [...prefix, process.execPath] : [process.execPath];
  const child = spawnIn(ns, cmd as string, [...rest, BIN, 'inspect', ...args]);
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => (out += d));
  child.stderr?.on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`inspect ${args.join(' ')} hung: ${err}`));
    }, 20_000);
    child.once('close', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, out, err };
}

async function startInspectFile(ns: string, args: string[]): Promise<SynRecord[]> {
  const r = await runInspect(ns, args);
  assert.equal(r.code, 0, r.err);
  return r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as SynRecord | Summary)
    .filter((l): l is SynRecord => l.type === 'syn');
}
