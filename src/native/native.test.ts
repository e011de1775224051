/**
 * The native addon against the real kernel: objects, maps, programs, pins,
 * BPF_PROG_TEST_RUN, error shapes and handle lifetimes. Hooks on interfaces
 * are in hooks.test.ts (they need a network namespace).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { binding, type NativeBinding, type NativeMap, type NativeObject } from './binding.js';
import {
  BPF_EXIST,
  BPF_F_NO_PREALLOC,
  BPF_NOEXIST,
  MapType,
  ProgType,
  TcAction,
  XdpAction,
  perCpuSlots,
  perCpuValue,
} from './bpf.js';
import { hasErrno, isNativeError, type NativeError } from './errors.js';
import { fixture, makePinDir, runTag, u32, u64 } from '../../test/lib/native.js';
import { MemorySettler } from '../lib/memory.js';

/** Run fn, which must throw a NativeError with the given code and syscall; return it. */
function nativeError(fn: () => unknown, code: string | string[], syscall: string): NativeError {
  const codes = Array.isArray(code) ? code : [code];
  try {
    fn();
  } catch (err) {
    assert.ok(isNativeError(err), `got ${String(err)}, want a NativeError (code, errno, syscall)`);
    assert.ok(codes.includes(err.code), `code: got ${err.code}, want ${codes.join(' or ')} (${err.message})`);
    assert.equal(err.syscall, syscall, `syscall: got ${err.syscall}, want ${syscall}`);
    assert.ok(Number.isInteger(err.errno) && err.errno > 0, `errno: got ${err.errno}, want a positive integer`);
    assert.ok(err.message.startsWith(`${syscall}: `), `message "${err.message}" should start with "${syscall}: "`);
    return err;
  }
  assert.fail(`want ${codes.join('/')} from ${syscall}, but nothing was thrown`);
}

/** Run fn, which must throw a TypeError whose message matches re. */
function typeError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TypeError, `got ${String(err)}, want a TypeError`);
    assert.match(err.message, re);
    return true;
  });
}

/** An IPv4 LPM key of the progs fixture: prefixlen (u32, host order) then 4 address bytes. */
function lpm4(prefixlen: number, addr: string): Buffer {
  return Buffer.concat([u32(prefixlen), Buffer.from(addr.split('.').map(Number))]);
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

let b: NativeBinding;
let obj: NativeObject;
let pins: { dir: string; cleanup: () => void };

before(() => {
  b = binding();
  obj = b.openObject(fixture('progs'));
  pins = makePinDir();
});

after(() => {
  obj?.close();
  pins?.cleanup();
});

describe('module', () => {
  test('libbpfVersion and numPossibleCpus', () => {
    assert.match(b.libbpfVersion(), /^1\.\d+$/, `libbpfVersion: got ${b.libbpfVersion()}`);
    const cpus = b.numPossibleCpus();
    assert.ok(Number.isInteger(cpus) && cpus >= 1, `numPossibleCpus: got ${cpus}`);
  });

  test('trimMemory hands the C heap freed by a collection back to the system (glibc)', () => {
    let blocks: Buffer[] | null = Array.from({ length: 8192 }, () => Buffer.allocUnsafeSlow(2048).fill(1));
    assert.equal(blocks.length, 8192);
    blocks = null;
    let released: boolean | undefined;
    const settler = new MemorySettler({ release: () => (released = b.trimMemory()), checkMs: 60_000 });
    settler.settle();
    settler.close();
    assert.equal(released, true, 'malloc_trim released the 16 MiB the collection freed');
  });

  test('isBpffs tells bpffs from other filesystems and missing paths', () => {
    assert.equal(b.isBpffs(pins.dir), true, `${pins.dir} should be on bpffs`);
    assert.equal(b.isBpffs('/proc'), false, '/proc is procfs');
    assert.equal(b.isBpffs(path.join(pins.dir, 'missing', 'deeper')), false, 'a missing path is not bpffs');
  });

  test('mountBpffs creates the directory and mounts a bpffs there', () => {
    const dir = path.join(os.tmpdir(), `netoken-bpffs-${runTag()}`, 'nested');
    try {
      b.mountBpffs(dir);
      assert.equal(b.isBpffs(dir), true, `${dir} after mountBpffs`);
      assert.equal(statSync(dir).mode & 0o777, 0o700, 'bpffs root mode');
    } finally {
      spawnSync('umount', [dir]);
      rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });
});

describe('objects', () => {
  test('lists programs and maps by their names in the ELF', () => {
    assert.deepEqual(obj.programNames().sort(), ['tc_count', 'tc_noop', 'xdp_pass']);
    assert.deepEqual(obj.mapNames().sort(), ['array_map', 'hash_map', 'lpm_map', 'percpu_counts']);
    assert.equal(obj.path, fixture('progs'));
  });

  test('program handles carry sane info', () => {
    const p = obj.program('tc_noop');
    const x = obj.program('xdp_pass');
    try {
      assert.ok(p.fd > 2, `fd: got ${p.fd}`);
      assert.equal(p.info.name, 'tc_noop');
      assert.equal(p.info.type, ProgType.SCHED_CLS);
      assert.ok(p.info.id > 0, `id: got ${p.info.id}`);
      assert.match(p.info.tag, /^[0-9a-f]{16}$/, `tag: got ${p.info.tag}`);
      assert.equal(x.info.type, ProgType.XDP);
      assert.notEqual(x.info.id, p.info.id);
      const again = b.programFromId(p.info.id);
      assert.deepEqual(again.info, p.info, 'programFromId should reach the same program');
      assert.notEqual(again.fd, p.fd, 'every handle owns its own fd');
      again.close();
    } finally {
      p.close();
      x.close();
    }
  });

  test('map handles carry sane info', () => {
    const m = obj.map('lpm_map');
    try {
      assert.deepEqual(
        { ...m.info, id: 0 },
        { name: 'lpm_map', type: MapType.LPM_TRIE, id: 0, keySize: 8, valueSize: 4, maxEntries: 16, flags: BPF_F_NO_PREALLOC },
      );
      assert.ok(m.info.id > 0);
    } finally {
      m.close();
    }
  });

  test('unknown program or map names are ENOENT', () => {
    nativeError(() => obj.program('nope'), 'ENOENT', 'bpf_object__find_program_by_name');
    nativeError(() => obj.map('nope'), 'ENOENT', 'bpf_object__find_map_by_name');
  });

  test('a missing file fails in bpf_object__open_file', () => {
    nativeError(() => b.openObject('/nonexistent/x.bpf.o'), 'ENOENT', 'bpf_object__open_file');
  });

  test('a verifier rejection carries the verifier log', () => {
    const err = nativeError(() => b.openObject(fixture('rejected')), ['EACCES', 'EINVAL'], 'bpf_object__load');
    assert.ok(err.log, 'err.log should hold libbpf output');
    assert.match(err.log, /invalid access to packet/, `log should explain the rejection, got:\n${err.log}`);
    assert.ok(err.log.length <= 4096, `log: got ${err.log.length} bytes, want at most 4096`);
  });

  test('handles outlive their object; close is idempotent', () => {
    const o = b.openObject(fixture('progs'));
    const p = o.program('tc_noop');
    const m = o.map('array_map');
    o.close();
    o.close();
    nativeError(() => o.program('tc_noop'), 'EBADF', 'bpf_object__find_program_by_name');
    assert.equal(p.testRun({ data: Buffer.alloc(64) }).retval, TcAction.UNSPEC);
    m.update(u32(1), u64(7));
    assert.deepEqual(m.lookup(u32(1)), u64(7));
    m.close();
    m.close();
    assert.equal(m.fd, -1, 'fd after close');
    nativeError(() => m.lookup(u32(1)), 'EBADF', 'bpf_map_lookup_elem');
    p.close();
    nativeError(() => p.testRun({ data: Buffer.alloc(64) }), 'EBADF', 'bpf_prog_test_run_opts');
  });

  test('handle classes cannot be constructed from JS', () => {
    const m = obj.map('hash_map');
    try {
      const Ctor = m.constructor as new () => unknown;
      assert.throws(() => new Ctor(), { name: 'TypeError', code: 'ERR_ILLEGAL_CONSTRUCTOR' });
    } finally {
      m.close();
    }
  });
});

describe('maps', () => {
  const handles: NativeMap[] = [];
  const open = (name: string): NativeMap => {
    const m = obj.map(name);
    handles.push(m);
    return m;
  };
  after(() => handles.forEach((m) => m.close()));

  test('HASH: update flags, lookup, delete, keys', () => {
    const m = open('hash_map');
    for (const k of m.keys()) m.delete(k);
    assert.equal(m.lookup(u32(5)), null, 'lookup of an absent key');
    m.update(u32(5), u64(50));
    m.update(u32(6), u64(60), BPF_NOEXIST);
    nativeError(() => m.update(u32(6), u64(61), BPF_NOEXIST), 'EEXIST', 'bpf_map_update_elem');
    nativeError(() => m.update(u32(7), u64(70), BPF_EXIST), 'ENOENT', 'bpf_map_update_elem');
    m.update(u32(6), u64(66), BPF_EXIST);
    assert.deepEqual(m.lookup(u32(6)), u64(66));
    const keys = m
      .keys()
      .map((k) => k.readUInt32LE())
      .sort();
    assert.deepEqual(keys, [5, 6]);
    assert.equal(m.delete(u32(5)), true, 'delete of a present key');
    assert.equal(m.delete(u32(5)), false, 'delete of an absent key');
    assert.deepEqual(
      m.keys().map((k) => k.readUInt32LE()),
      [6],
    );
  });

  test('ARRAY: every index exists, delete is refused', () => {
    const m = open('array_map');
    assert.deepEqual(m.lookup(u32(3)), u64(0), 'fresh array slots are zero');
    m.update(u32(3), u64(0xdeadbeefn));
    assert.deepEqual(m.lookup(u32(3)), u64(0xdeadbeefn));
    assert.equal(m.lookup(u32(4)), null, 'index past max_entries');
    nativeError(() => m.delete(u32(3)), 'EINVAL', 'bpf_map_delete_elem');
    assert.deepEqual(
      m.keys().map((k) => k.readUInt32LE()),
      [0, 1, 2, 3],
    );
  });

  test('PERCPU_ARRAY: values span every possible CPU in 8-byte slots', () => {
    const m = open('percpu_counts');
    const cpus = b.numPossibleCpus();
    const want = perCpuValue(
      Array.from({ length: cpus }, (_, i) => u32(100 + i)),
      4,
    );
    assert.equal(want.length, cpus * 8);
    m.update(u32(1), want);
    const got = m.lookup(u32(1));
    assert.ok(got);
    assert.equal(got.length, cpus * 8, `per-CPU value length: got ${got.length}, want ${cpus * 8}`);
    assert.deepEqual(
      perCpuSlots(got, 4).map((s) => s.readUInt32LE()),
      Array.from({ length: cpus }, (_, i) => 100 + i),
    );
    typeError(() => m.update(u32(1), u32(1)), new RegExp(`value must be ${cpus * 8} bytes.*per-CPU.*got 4`));
  });

  test('LPM_TRIE: the longest prefix wins; keys iterate', () => {
    const m = open('lpm_map');
    m.update(lpm4(8, '10.0.0.0'), u32(8));
    m.update(lpm4(16, '10.1.0.0'), u32(16));
    m.update(lpm4(24, '10.1.2.0'), u32(24));
    const match = (addr: string): number | null => m.lookup(lpm4(32, addr))?.readUInt32LE() ?? null;
    assert.equal(match('10.1.2.3'), 24);
    assert.equal(match('10.1.9.9'), 16);
    assert.equal(match('10.9.9.9'), 8);
    assert.equal(match('11.0.0.1'), null);
    const keys = m
      .keys()
      .map((k) => `${k.subarray(4).join('.')}/${k.readUInt32LE()}`)
      .sort();
    assert.deepEqual(keys, ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24']);
    assert.equal(m.delete(lpm4(16, '10.1.0.0')), true);
    assert.equal(match('10.1.9.9'), 8, 'after deleting /16 the /8 matches');
  });

  test('wrong key or value sizes are TypeErrors', () => {
    const m = open('hash_map');
    typeError(() => m.lookup(Buffer.alloc(3)), /key must be 4 bytes.*hash_map.*got 3/);
    typeError(() => m.update(u32(1), Buffer.alloc(4)), /value must be 8 bytes.*got 4/);
    typeError(() => m.delete(Buffer.alloc(8)), /key must be 4 bytes/);
    typeError(() => m.lookup('abcd' as unknown as Buffer), /key must be a Buffer/);
  });

  test('createMap, and mapFromId reaching the same map', () => {
    const m = b.createMap({ type: MapType.HASH, keySize: 4, valueSize: 8, maxEntries: 4, name: 'nt_test_map' });
    handles.push(m);
    assert.equal(m.info.name, 'nt_test_map');
    assert.equal(m.info.type, MapType.HASH);
    m.update(u32(1), u64(11));
    const same = b.mapFromId(m.info.id);
    handles.push(same);
    assert.deepEqual(same.lookup(u32(1)), u64(11));
    nativeError(() => b.createMap({ type: 9999, keySize: 4, valueSize: 4, maxEntries: 1 }), 'EINVAL', 'bpf_map_create');
    nativeError(() => b.mapFromId(0x7fffffff), 'ENOENT', 'bpf_map_get_fd_by_id');
  });
});

describe('pins', () => {
  test('a pinned map is the same map through mapFromPin', () => {
    const m = obj.map('hash_map');
    const pin = path.join(pins.dir, 'hash_map');
    try {
      m.pin(pin);
      m.update(u32(9), u64(99));
      const fromPin = b.mapFromPin(pin);
      assert.equal(fromPin.info.id, m.info.id);
      assert.deepEqual(fromPin.lookup(u32(9)), u64(99));
      fromPin.close();
      nativeError(() => m.pin(pin), 'EEXIST', 'bpf_obj_pin');
    } finally {
      m.close();
    }
  });

  test('programs pin too; a pin of the wrong kind is EINVAL', () => {
    const p = obj.program('tc_noop');
    const pin = path.join(pins.dir, 'tc_noop');
    try {
      p.pin(pin);
      const fromPin = b.programFromPin(pin);
      assert.equal(fromPin.info.id, p.info.id);
      fromPin.close();
      nativeError(() => b.mapFromPin(pin), 'EINVAL', 'bpf_obj_get');
      nativeError(() => b.linkFromPin(pin), 'EINVAL', 'bpf_obj_get');
    } finally {
      p.close();
    }
  });

  test('a missing pin is ENOENT', () => {
    nativeError(() => b.mapFromPin(path.join(pins.dir, 'missing')), 'ENOENT', 'bpf_obj_get');
    nativeError(() => b.programFromPin(path.join(pins.dir, 'missing')), 'ENOENT', 'bpf_obj_get');
  });

  test('reopening an object with the same pinRoot reuses its pinned map', () => {
    const root = path.join(pins.dir, 'objroot');
    const first = b.openObject(fixture('pinned'), { pinRoot: root });
    const m1 = first.map('kept_state');
    m1.update(u32(42), u64(4242));
    const id = m1.info.id;
    m1.close();
    first.close();
    assert.ok(existsSync(path.join(root, 'kept_state')), 'libbpf should pin kept_state under pinRoot');

    const second = b.openObject(fixture('pinned'), { pinRoot: root });
    const m2 = second.map('kept_state');
    try {
      assert.equal(m2.info.id, id, 'the reopened object should use the pinned map, not a new one');
      assert.deepEqual(m2.lookup(u32(42)), u64(4242), 'a value written before the reopen survives');
    } finally {
      m2.close();
      second.close();
    }
  });
});

describe('testRun', () => {
  const packet = Buffer.from(Array.from({ length: 74 }, (_, i) => i));

  test('the no-op tc program returns TC_ACT_UNSPEC and the packet unchanged', () => {
    const p = obj.program('tc_noop');
    try {
      const r = p.testRun({ data: packet });
      assert.equal(r.retval, TcAction.UNSPEC);
      assert.deepEqual(r.data, packet, 'output packet');
      assert.equal(r.ctxOut, null);
      const many = p.testRun({ data: packet, repeat: 1000 });
      assert.ok(many.duration > 0, `duration over 1000 runs: got ${many.duration}`);
      // The thread's CPU time covers the runs: at least what the kernel measured them to take (it rounds down).
      assert.ok(many.cpuNs >= many.duration * 1000, `thread CPU time ${many.cpuNs} ns for 1000 runs of ${many.duration} ns`);
    } finally {
      p.close();
    }
  });

  test('a program writing maps: per-CPU counter and hash entry', () => {
    const p = obj.program('tc_count');
    const counts = obj.map('percpu_counts');
    const hash = obj.map('hash_map');
    try {
      const before = sumPerCpuU32(counts.lookup(u32(0)));
      p.testRun({ data: packet, repeat: 5 });
      const afterSum = sumPerCpuU32(counts.lookup(u32(0)));
      assert.equal(afterSum - before, 5, `counter increase over 5 runs: got ${afterSum - before}`);
      assert.deepEqual(hash.lookup(u32(1)), u64(packet.length), 'hash_map[1] = skb->len');
    } finally {
      p.close();
      counts.close();
      hash.close();
    }
  });

  test('ctxIn is passed and ctxOut read back', () => {
    const p = obj.program('tc_noop');
    try {
      const ctx = Buffer.alloc(192); // struct __sk_buff
      ctx.writeUInt32LE(0x4e54, 8); // __sk_buff.mark
      const r = p.testRun({ data: packet, ctxIn: ctx });
      assert.ok(r.ctxOut, 'ctxOut should be set when ctxIn is given');
      assert.equal(r.ctxOut.length, ctx.length);
      assert.equal(r.ctxOut.readUInt32LE(8), 0x4e54, '__sk_buff.mark carried from ctxIn to ctxOut');
    } finally {
      p.close();
    }
  });

  test('an output buffer that is too small is ENOSPC', () => {
    const p = obj.program('tc_noop');
    try {
      const err = nativeError(() => p.testRun({ data: packet, dataSizeOut: 16 }), 'ENOSPC', 'bpf_prog_test_run_opts');
      assert.match(err.message, new RegExp(`output packet is ${packet.length} bytes, dataSizeOut 16`));
    } finally {
      p.close();
    }
  });

  test('XDP pass returns XDP_PASS', () => {
    const p = obj.program('xdp_pass');
    try {
      const r = p.testRun({ data: packet });
      assert.equal(r.retval, XdpAction.PASS);
      assert.deepEqual(r.data, packet);
    } finally {
      p.close();
    }
  });
});

/** A u32 counter summed over CPUs (the percpu_counts fixture has 4-byte values). */
function sumPerCpuU32(value: Buffer | null): number {
  assert.ok(value, 'per-CPU counter slot should exist');
  return perCpuSlots(value, 4).reduce((s, v) => s + v.readUInt32LE(), 0);
}

describe('errors from hooks on a missing interface', () => {
  const missing = 999999;

  test('tc, TCX and XDP calls name the errno and the call', () => {
    const p = obj.program('tc_noop');
    try {
      const e1 = nativeError(() => b.tcHookCreate(missing), 'ENODEV', 'bpf_tc_hook_create');
      assert.equal(e1.errno, 19);
      assert.match(e1.message, /^bpf_tc_hook_create: No such device \(ifindex 999999\)$/);
      const e2 = nativeError(
        () => b.tcAttach({ ifindex: missing, direction: 'egress', handle: 1, priority: 1, progFd: p.fd, replace: false }),
        ['ENODEV', 'EINVAL'],
        'bpf_tc_attach',
      );
      assert.match(e2.message, /\(ifindex 999999, egress, handle 1, priority 1[);]/);
      const e3 = nativeError(() => b.createTcxLink(p, missing, 'egress'), 'ENODEV', 'bpf_link_create');
      assert.match(e3.message, /\(ifindex 999999, egress, program tc_noop id \d+\)$/);
      nativeError(() => b.tcxQuery(missing, 'ingress'), 'ENODEV', 'bpf(BPF_PROG_QUERY)');
      nativeError(() => b.xdpQuery(missing), 'ENODEV', 'bpf_xdp_query');
      assert.ok(hasErrno(e1, 'ENODEV'));
    } finally {
      p.close();
    }
  });

  test('bad arguments are TypeErrors, not kernel errors', () => {
    typeError(() => b.createTcxLink({} as never, 1, 'egress'), /program must be a program handle/);
    typeError(() => b.tcxQuery(1, 'sideways' as never), /direction must be 'ingress' or 'egress'/);
    assert.throws(() => b.tcHookCreate(-1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  });
});

describe('lifetimes', () => {
  test('handles JS forgets are released by the garbage collector', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const m = obj.map('hash_map');
    const id = m.info.id;
    m.close();
    const base = openFds();
    for (let i = 0; i < 200; i++) {
      b.mapFromId(id);
      obj.program('tc_noop');
    }
    assert.ok(openFds() >= base + 400, `fds while 400 handles live: got ${openFds() - base} more than before`);
    for (let round = 0; round < 20 && openFds() > base + 10; round++) {
      gc();
      await tick();
    }
    assert.ok(openFds() <= base + 10, `fds after GC: got ${openFds() - base} more than before, want ~0`);
  });
});
