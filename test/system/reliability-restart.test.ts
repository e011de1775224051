/**
 * kill -9 in the middle of a reconcile, again and again, while connections run in a loop
 * through the marked interface: a policy of 10 000 destinations (and the server) is edited
 * so that every reconcile rewrites 20 000 trie entries, and the agent is killed as soon as
 * the first new entry is in the kernel, both after a file edit and during the reconcile of
 * a restart. Every SYN of the whole period must carry the token (a second agent verifies
 * them at the server in Monitor mode, and a capture looks at them), one program only is
 * ever attached at egress, the pinned link and maps are reused, the counters never go back
 * and count exactly the SYNs the client sent, and each restart finishes the interrupted change.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { decodeLpmKey, encodeLpmKey } from '../../src/lib/abi.js';
import { parseCidr } from '../../src/lib/cidr.js';
import { binding } from '../../src/native/binding.js';
import { agentIn, counter, kernelHooks, policyYaml } from '../lib/agent.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { startServer, synsSent, tcpCounters } from '../lib/tcp.js';
import { destinationList, destinations, pinnedCounters, pinnedMapIds, watchSyns } from './reliability-lib.js';
import { layoutDir } from '../../src/agent/layout.js';
import { sleep } from '../../src/lib/wait.js';

const N = 9999;
const CYCLES = 5;
/** how long after the first new entry each cycle's kill comes: at once, or later in the writes or deletes */
const KILL_DELAY_MS = [0, 20, 0, 60, 0];

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('kill -9 mid-reconcile', () => {
  test(`${CYCLES} cycles of kill -9 during a reconcile of ${N + 1} destinations and restart: marking never stops, nothing doubles, nothing is lost`, async (t) => {
    const topo = await createTopology({ name: 'crash', kind: 'pair' });
    topologies.push(topo);
    const agent = agentIn(topo.client.ns, 'crash');
    const verifier = agentIn(topo.server.ns, 'crashv');
    const server = await startServer(topo.server.ns, { port: 0 });
    const ifindex = topo.client.ifindex;
    const version = (k: number): string[] => [...destinations(N, k), `${topo.server.ipv4}/32`];
    const writeVersion = (k: number): void => {
      agent.writePolicy(
        `# version ${k}\n` +
          policyYaml([
            {
              name: 'big',
              spec: `interfaces: {names: [${topo.client.dev}]}\negress:\n  destinations: ${destinationList(version(k))}`,
            },
          ]),
      );
    };
    const keyOf = (cidr: string): Buffer => encodeLpmKey(ifindex, parseCidr(cidr));
    const egressPin = (): string => path.join(layoutDir(agent.stateDir), 'nt_egress4');
    /** which of two versions' entries the kernel holds */
    const held = (a: number, b: number): { a: number; b: number; total: number } => {
      const m = binding().mapFromPin(egressPin());
      try {
        const setA = new Set(destinations(N, a));
        const setB = new Set(destinations(N, b));
        let na = 0;
        let nb = 0;
        let total = 0;
        for (const k of m.keys()) {
          const { addr, prefixLen } = decodeLpmKey(k);
          const text = `${[...addr].join('.')}/${prefixLen}`;
          total++;
          if (setA.has(text)) na++;
          if (setB.has(text)) nb++;
        }
        return { a: na, b: nb, total };
      } finally {
        m.close();
      }
    };
    /** Resolves once the first destination of version `k` is in the kernel: the reconcile that writes it has begun. */
    const firstEntryOf = async (k: number, timeoutMs = 20_000): Promise<void> => {
      const m = binding().mapFromPin(egressPin());
      const key = keyOf(destinations(N, k)[0]!);
      const end = Date.now() + timeoutMs;
      try {
        while (!m.lookup(key)) {
          if (Date.now() > end) throw new Error(`version ${k} never started to apply\n${agent.log().slice(-3000)}`);
          await new Promise((r) => setImmediate(r));
        }
      } finally {
        m.close();
      }
    };
    const report: string[] = [];
    let kills = 0;
    let midReconcile = 0;
    let restarts = 0;
    try {
      verifier.writePolicy(
        policyYaml([
          {
            name: 'check',
            spec: `interfaces: {names: [${topo.server.dev}]}\ningress: {action: Monitor, ports: [${server.port}]}`,
          },
        ]),
      );
      await verifier.start();
      await verifier.waitStatus((s) => s.hooks.length === 1 && s.ready, 30_000, 'the verifier at the server');
      writeVersion(0);
      await agent.start();
      const s0 = await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 60_000, 'the first reconcile');
      const linkId = s0.hooks[0]!.linkId;
      const mapIds = pinnedMapIds(agent.stateDir);
      assert.ok(Object.keys(mapIds).length >= 5, `pinned maps: ${JSON.stringify(mapIds)}`);
      let programId = s0.programId;
      let marked = pinnedCounters(agent.stateDir).marked ?? 0n;
      const tcpBefore = await tcpCounters(topo.client.ns);
      const watch = await watchSyns(topo, server.port);
      await sleep(500);

      /** While the agent is down: the old program alone at egress, the same link and maps, counters not behind. */
      const checkDown = async (what: string): Promise<void> => {
        const hooks = await kernelHooks(topo.client.ns, topo.client.dev);
        assert.equal(hooks.tcx.length, 1, `${what}: exactly one program at egress, got ${JSON.stringify(hooks.tcx)}`);
        // The last one swapped in: the agent before, or the killed one if it got that far.
        programId = hooks.tcx[0]!;
        assert.ok(existsSync(path.join(agent.stateDir, 'links', `egress-${ifindex}`)), `${what}: the link pin is there`);
        assert.deepEqual(pinnedMapIds(agent.stateDir), mapIds, `${what}: the same pinned maps`);
        const now = pinnedCounters(agent.stateDir).marked ?? 0n;
        assert.ok(now >= marked, `${what}: marked went back from ${marked} to ${now}`);
        marked = now;
      };
      /** Restart and wait until version `k` is whole in the kernel, then check that nothing doubled. */
      const restart = async (k: number, what: string): Promise<void> => {
        // The status file may still be the killed agent's (written before the kill): only one the restarted agent wrote counts.
        const startedAt = new Date().toISOString();
        await agent.start();
        restarts++;
        const s = await agent.waitStatus(
          (x) => x.updatedAt >= startedAt && x.programId !== programId && x.hooks.length === 1 && x.ready,
          60_000,
          `${what}: the restarted agent`,
        );
        const h = held(k, k === 0 ? 1 : k - 1);
        assert.equal(h.a, N, `${what}: the restart finished the interrupted change: ${h.a} of ${N} destinations of version ${k}`);
        assert.equal(
          h.total,
          N + 1,
          `${what}: nothing else is left in the trie (${h.total} entries, ${h.b} of the version before)`,
        );
        const hooks = await kernelHooks(topo.client.ns, topo.client.dev);
        assert.deepEqual(hooks.tcx, [s.programId], `${what}: exactly one program at egress, the new one`);
        assert.equal(s.hooks[0]!.linkId, linkId, `${what}: the pinned link is reused`);
        assert.deepEqual(pinnedMapIds(agent.stateDir), mapIds, `${what}: the pinned maps are reused (same ids)`);
        const now = pinnedCounters(agent.stateDir).marked ?? 0n;
        assert.ok(now >= marked, `${what}: marked went back from ${marked} to ${now}`);
        marked = now;
        programId = s.programId;
      };
      const kill = async (k: number, prev: number, what: string): Promise<void> => {
        await agent.stop('SIGKILL');
        kills++;
        const h = held(k, prev);
        const mid = h.a > 0 && !(h.a === N && h.b === 0);
        if (mid) midReconcile++;
        report.push(
          `${what}: killed with ${h.a}/${N} new and ${h.b}/${N} old destinations in the trie${mid ? ' (mid-reconcile)' : ''}`,
        );
        await checkDown(what);
      };

      for (let k = 1; k <= CYCLES; k++) {
        if (k % 2 === 1) {
          // After a file edit: killed once the new version has started to go in.
          writeVersion(k);
          await firstEntryOf(k);
          await sleep(KILL_DELAY_MS[k - 1] ?? 0);
          await kill(k, k - 1, `cycle ${k}, after an edit`);
        } else {
          // Killed while idle, edited while down, killed again during the restart's reconcile.
          await agent.stop('SIGKILL');
          kills++;
          await checkDown(`cycle ${k}, idle`);
          writeVersion(k);
          await agent.start();
          restarts++;
          await firstEntryOf(k);
          await sleep(KILL_DELAY_MS[k - 1] ?? 0);
          await kill(k, k - 1, `cycle ${k}, during the restart's reconcile`);
        }
        await restart(k, `cycle ${k}`);
      }
      await sleep(500);
      const seen = await watch.stop();
      const sent = await synsSent(topo.client.ns, tcpBefore);
      const total = pinnedCounters(agent.stateDir).marked ?? 0n;
      const verified = await verifier.statusReport();
      const v = (name: string): number => counter(verified, name, 'check');
      for (const line of report) t.diagnostic(line);
      t.diagnostic(
        `${kills} kills (${midReconcile} mid-reconcile), ${restarts} restarts survived; ${seen.loop.ok}/${seen.loop.attempts} connections, ${sent} SYNs sent, ` +
          `${v('verify_valid')} verified valid at the server (missing ${v('verify_missing')}, invalid ${v('verify_invalid')}); marked counter ${total}; ` +
          `captured ${seen.syns} SYNs (${seen.droppedByKernel} dropped by the capture), ${seen.marked} with the token`,
      );
      assert.deepEqual(seen.loop.failures, [], 'every connection of the loop completed');
      assert.ok(sent >= 100, `the loop kept connecting: ${sent} SYNs`);
      assert.deepEqual(
        { missing: v('verify_missing'), invalid: v('verify_invalid'), malformed: v('verify_malformed') },
        { missing: 0, invalid: 0, malformed: 0 },
        'no SYN reached the server without the right token',
      );
      assert.equal(v('verify_valid'), sent, 'every SYN the client sent reached the server with the right token');
      assert.equal(total, BigInt(sent), 'the marked counter counts exactly the SYNs sent, across every kill');
      assert.deepEqual(seen.unmarked, [], `every captured SYN carried the token (${seen.marked}/${seen.syns})`);
      assert.ok(midReconcile >= 3, `at least three kills landed mid-reconcile:\n${report.join('\n')}`);
      await server.stop();
    } finally {
      await agent.cleanup();
      await verifier.cleanup();
    }
  });
});
