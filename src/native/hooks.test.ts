/**
 * tc (clsact), TCX and XDP hooks through the native addon, on a veth pair in
 * a network namespace this test creates.
 *
 * Interface indexes belong to a network namespace, and a process cannot move
 * itself into one, so each scenario runs in a child process started with
 * `nsenter --net=...` (which keeps the host's mounts, so bpffs pins are shared).
 * The child is this same file with NETOKEN_HOOKS_SCENARIO set; it exits non-zero
 * with the failed assertion on stderr, which the parent test reports.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { binding, type Direction, type NativeProgram } from './binding.js';
import { AttachType, LinkType, XdpAttached, XdpFlags } from './bpf.js';
import { isNativeError } from './errors.js';
import { sleep } from '../lib/wait.js';
import { fixture, makePinDir, runTag, u32 } from '../../test/lib/native.js';

const thisFile = fileURLToPath(import.meta.url);
const scenarioEnv = 'NETOKEN_HOOKS_SCENARIO';

// ---- child side: runs inside the namespace -------------------------------------------

interface Scenario {
  dev: string;
  pinDir: string;
}

function ifindexOf(dev: string): number {
  const out = JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' })) as { ifindex: number }[];
  const ifindex = out[0]?.ifindex;
  assert.ok(ifindex, `ifindex of ${dev}`);
  return ifindex;
}

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

function expectCode(fn: () => unknown, code: string, syscall: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isNativeError(err), `got ${String(err)}, want a NativeError`);
    assert.equal(err.code, code, `code: got ${err.code}, want ${code} (${err.message})`);
    assert.equal(err.syscall, syscall, `syscall: got ${err.syscall}, want ${syscall}`);
    return true;
  });
}

function loadPrograms(): { noop: NativeProgram; count: NativeProgram; xdp: NativeProgram; packets: () => number } {
  const b = binding();
  const obj = b.openObject(fixture('progs'));
  const counts = obj.map('percpu_counts');
  const progs = { noop: obj.program('tc_noop'), count: obj.program('tc_count'), xdp: obj.program('xdp_pass') };
  obj.close();
  const packets = (): number => {
    const v = counts.lookup(u32(0));
    assert.ok(v, 'percpu_counts[0]');
    let sum = 0;
    for (let off = 0; off < v.length; off += 8) sum += v.readUInt32LE(off);
    return sum;
  };
  return { ...progs, packets };
}

/**
 * Packets out of the first veth: ARP requests for an address on its subnet that
 * nobody holds (an address of the peer would be local, and never leave through it).
 */
async function traffic(): Promise<void> {
  const sock = dgram.createSocket('udp4');
  try {
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) =>
        sock.send(Buffer.from('netoken'), 9, '10.77.0.9', (err) => (err ? reject(err) : resolve())),
      );
    }
    await sleep(100);
  } finally {
    sock.close();
  }
}

const scenarios: Record<string, (s: Scenario) => void | Promise<void>> = {
  'tc-clsact': ({ dev }) => {
    const b = binding();
    const ifindex = ifindexOf(dev);
    const { noop, count } = loadPrograms();
    const egress = { ifindex, direction: 'egress' as Direction, handle: 1, priority: 1 };
    const ingress = { ...egress, direction: 'ingress' as Direction };

    assert.equal(b.tcQuery(egress), null, 'tcQuery before any hook');
    assert.deepEqual(b.tcHookCreate(ifindex), { created: true }, 'first tcHookCreate');
    assert.match(sh('tc', 'qdisc', 'show', 'dev', dev), /qdisc clsact/, 'tc qdisc show after create');
    assert.deepEqual(b.tcHookCreate(ifindex), { created: false }, 'second tcHookCreate (qdisc exists)');

    const attached = b.tcAttach({ ...egress, progFd: noop.fd, replace: false });
    assert.deepEqual(attached, { progId: noop.info.id });
    assert.equal(b.tcQuery(egress), noop.info.id, 'tcQuery after attach');
    assert.equal(b.tcQuery(ingress), null, 'nothing on ingress');
    assert.match(sh('tc', 'filter', 'show', 'dev', dev, 'egress'), new RegExp(`id ${noop.info.id}\\b`), 'tc filter show');

    expectCode(() => b.tcAttach({ ...egress, progFd: count.fd, replace: false }), 'EEXIST', 'bpf_tc_attach');
    assert.deepEqual(b.tcAttach({ ...egress, progFd: count.fd, replace: true }), { progId: count.info.id });
    assert.equal(b.tcQuery(egress), count.info.id, 'tcQuery after replace');

    b.tcDetach(egress);
    assert.equal(b.tcQuery(egress), null, 'tcQuery after detach');
    expectCode(() => b.tcDetach(egress), 'ENOENT', 'bpf_tc_detach');

    b.tcHookDestroy(ifindex);
    assert.doesNotMatch(sh('tc', 'qdisc', 'show', 'dev', dev), /clsact/, 'clsact gone after tcHookDestroy');
    assert.equal(b.tcQuery(egress), null, 'tcQuery after the qdisc is gone');
    assert.deepEqual(b.tcHookCreate(ifindex), { created: true }, 'create again after destroy');
    b.tcHookDestroy(ifindex);
  },

  'tcx-link': async ({ dev, pinDir }) => {
    const b = binding();
    const ifindex = ifindexOf(dev);
    const { noop, count, packets } = loadPrograms();
    const pin = path.join(pinDir, `tcx-${dev}`);

    const link = b.createTcxLink(noop, ifindex, 'egress');
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [noop.info.id], 'tcxQuery egress after create');
    assert.deepEqual(b.tcxQuery(ifindex, 'ingress'), [], 'tcxQuery ingress');
    const info = link.info();
    assert.deepEqual(
      { ...info, id: 0 },
      { id: 0, progId: noop.info.id, type: LinkType.TCX, ifindex, attachType: AttachType.TCX_EGRESS },
      'link info',
    );

    link.pin(pin);
    link.close();
    link.close();
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [noop.info.id], 'a pinned link stays attached after close');

    const fromPin = b.linkFromPin(pin);
    const pinnedInfo = fromPin.info();
    assert.equal(pinnedInfo.id, info.id, 'linkFromPin: same link');
    assert.equal(pinnedInfo.ifindex, ifindex);
    assert.equal(pinnedInfo.attachType, AttachType.TCX_EGRESS);
    const fromId = b.linkFromId(info.id);
    assert.equal(fromId.info().id, info.id, 'linkFromId: same link');
    fromId.close();

    fromPin.update(count);
    assert.equal(fromPin.info().progId, count.info.id, 'progId after update');
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [count.info.id], 'tcxQuery after update');
    const before = packets();
    await traffic();
    assert.ok(packets() > before, `the updated program should see egress packets: ${before} -> ${packets()}`);

    // A second, unpinned link runs after ours; closing its only fd detaches it.
    const second = b.createTcxLink(noop, ifindex, 'egress');
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [count.info.id, noop.info.id], 'run order');
    second.close();
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [count.info.id], 'unpinned link gone after close');

    const ingress = b.createTcxLink(noop, ifindex, 'ingress');
    assert.equal(ingress.info().attachType, AttachType.TCX_INGRESS);
    assert.deepEqual(b.tcxQuery(ifindex, 'ingress'), [noop.info.id]);
    ingress.detach();
    assert.deepEqual(b.tcxQuery(ifindex, 'ingress'), [], 'ingress after detach');
    ingress.close();

    fromPin.detach();
    assert.deepEqual(b.tcxQuery(ifindex, 'egress'), [], 'a pinned link detaches on detach()');
    fromPin.close();
    rmSync(pin);
  },

  'xdp-skb': ({ dev }) => {
    const b = binding();
    const ifindex = ifindexOf(dev);
    const { xdp } = loadPrograms();
    assert.equal(b.xdpQuery(ifindex).attachMode, XdpAttached.NONE, 'before attach');

    b.xdpAttach(ifindex, xdp.fd, XdpFlags.SKB_MODE);
    assert.deepEqual(
      b.xdpQuery(ifindex),
      { attachMode: XdpAttached.SKB, progId: xdp.info.id, drvProgId: 0, skbProgId: xdp.info.id, hwProgId: 0 },
      'xdpQuery after SKB-mode attach',
    );
    assert.match(sh('ip', 'link', 'show', 'dev', dev), /xdpgeneric/, 'ip link shows generic XDP');
    expectCode(() => b.xdpAttach(ifindex, xdp.fd, XdpFlags.SKB_MODE | XdpFlags.UPDATE_IF_NOEXIST), 'EBUSY', 'bpf_xdp_attach');

    b.xdpDetach(ifindex, XdpFlags.SKB_MODE);
    assert.equal(b.xdpQuery(ifindex).attachMode, XdpAttached.NONE, 'after detach');
  },
};

async function runChild(name: string): Promise<void> {
  const run = scenarios[name];
  if (!run) throw new Error(`unknown scenario ${name}`);
  await run({ dev: process.env.NETOKEN_HOOKS_DEV ?? '', pinDir: process.env.NETOKEN_HOOKS_PINDIR ?? '' });
}

// ---- parent side: the tests -------------------------------------------------------------

function defineTests(): void {
  const tag = runTag();
  const ns = `netoken-native-${tag}`;
  const devA = `ntv${tag.slice(-6)}a`;
  const devB = `ntv${tag.slice(-6)}b`;
  let pins: { dir: string; cleanup: () => void } | undefined;

  before(() => {
    pins = makePinDir();
    execFileSync('ip', ['netns', 'add', ns]);
    const ip = (...args: string[]): string => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
    ip('link', 'add', devA, 'type', 'veth', 'peer', 'name', devB);
    ip('addr', 'add', '10.77.0.1/24', 'dev', devA);
    ip('link', 'set', devA, 'up');
    ip('link', 'set', devB, 'up');
    ip('link', 'set', 'lo', 'up');
  });

  after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    pins?.cleanup();
  });

  const inNamespace = (scenario: string): void => {
    assert.ok(pins, 'setup made a pin directory');
    // The child is a plain script, not a test file of this run: drop the runner's marker.
    const { NODE_TEST_CONTEXT: _runnerMarker, ...env } = process.env;
    const r = spawnSync('nsenter', [`--net=/var/run/netns/${ns}`, '--', process.execPath, thisFile], {
      env: { ...env, [scenarioEnv]: scenario, NETOKEN_HOOKS_DEV: devA, NETOKEN_HOOKS_PINDIR: pins.dir },
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (r.error) throw r.error;
    assert.equal(r.status, 0, `scenario ${scenario} in netns ${ns} failed (exit ${r.status}):\n${r.stderr}${r.stdout}`);
  };

  describe('hooks in a network namespace', () => {
    test('tc clsact: hook create/exists, attach, replace, query, detach, destroy', () => inNamespace('tc-clsact'));
    test('TCX: link create, query, pin survives close, update, order, detach', () => inNamespace('tcx-link'));
    test('XDP in SKB mode: attach, query, refuse a second, detach', () => inNamespace('xdp-skb'));
  });
}

const scenario = process.env[scenarioEnv];
if (scenario) {
  await runChild(scenario);
} else {
  defineTests();
}
