/**
 * An agent upgraded over the pinned state of map layout 1 (what the previous version left:
 * per-CPU hash counters, maps straight in maps/, its marker on a pinned TCX link) moves it
 * to the current layout with no gap in marking: connections run in a loop through the
 * interface all along, and every SYN of the whole period must carry the token, the link
 * stays (now running the new program), the old pins go, and the counters carry over so
 * that the marked counter counts every SYN the client sent, before and after.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  encodeEgressRule,
  encodeLpmKey,
  encodePolicy,
  NT_OPT_EXID_DEFAULT as EXID,
  NT_OPT_KIND_DEFAULT as KIND,
  TokenModeCode,
} from '../../src/lib/abi.js';
import { parseCidr } from '../../src/lib/cidr.js';
import { binding } from '../../src/native/binding.js';
import { layoutDir } from '../../src/agent/layout.js';
import { ROOT, TOKEN, agentIn, counter, kernelHooks, policyYaml } from '../lib/agent.js';
import { layout1Objects } from '../lib/layout1.js';
import { createTopology, netnsPath, run, type Topology } from '../lib/netns.js';
import { startServer, synsSent, tcpCounters } from '../lib/tcp.js';
import { pinnedCounters, watchSyns } from './reliability-lib.js';

const HELPER = path.join(ROOT, 'dist/test/packet/netns-helper.js');
/** The policy's slot under layout 1, as its agent recorded it in the run state. */
const POLICY_ID = 1;

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

const key32 = (n: number): Buffer => {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(n);
  return k;
};

test('an agent upgraded over the pinned maps of layout 1 moves them to the current layout without a gap in marking', async (t) => {
  const old = layout1Objects();
  const topo = await createTopology({ name: 'upgrade', kind: 'pair' });
  topologies.push(topo);
  const agent = agentIn(topo.client.ns, 'upgrade');
  const server = await startServer(topo.server.ns, { port: 0 });
  const ifindex = topo.client.ifindex;
  const oldMaps = path.join(agent.stateDir, 'maps');
  const linkPin = path.join(agent.stateDir, 'links', `egress-${ifindex}`);
  try {
    // What an agent of layout 1 left: its maps pinned in maps/ (both objects'), its marker on a
    // pinned TCX link, the policy's slot, rule and the slot id in its run state.
    for (const dir of [oldMaps, path.dirname(linkPin), agent.runDir]) mkdirSync(dir, { recursive: true, mode: 0o700 });
    // nsenter, not `ip netns exec`, which mounts a sysfs of its own and hides bpffs.
    const attach = ['attach', old.marker, oldMaps, 'nt_mark_egress', String(ifindex), linkPin];
    const attached = JSON.parse(
      (await run('nsenter', [`--net=${netnsPath(topo.client.ns)}`, '--', process.execPath, HELPER, ...attach])).stdout,
    ) as { linkId: number; progId: number };
    binding().openObject(old.verifier, { pinRoot: oldMaps }).close();
    const b = binding();
    const policies = b.mapFromPin(path.join(oldMaps, 'nt_policies'));
    const egress4 = b.mapFromPin(path.join(oldMaps, 'nt_egress4'));
    // Layout 1's policy slot and rule have the layout they have now (the rule's counter slot was padding, 0).
    policies.update(
      key32(POLICY_ID),
      encodePolicy({ mode: TokenModeCode.Static, kind: KIND, exid: EXID, epochSeconds: 0, bind: 0, current: TOKEN }),
    );
    egress4.update(encodeLpmKey(ifindex, parseCidr(`${topo.server.ipv4}/32`)), encodeEgressRule(POLICY_ID, []));
    policies.close();
    egress4.close();
    writeFileSync(
      path.join(agent.runDir, 'state.json'),
      JSON.stringify({ ids: { up: POLICY_ID }, tc: {}, tcIngress: {}, xdp: {} }),
      { mode: 0o600 },
    );
    agent.writePolicy(
      policyYaml([
        {
          name: 'up',
          spec: `interfaces: {names: [${topo.client.dev}]}\negress:\n  destinations: [{cidr: "${topo.server.ipv4}/32"}]`,
        },
      ]),
    );

    const tcpBefore = await tcpCounters(topo.client.ns);
    const watch = await watchSyns(topo, server.port);
    await new Promise((r) => setTimeout(r, 1000));
    const oldStats = b.mapFromPin(path.join(oldMaps, 'nt_stats'));
    const markedBefore = oldStats.keys().length;
    oldStats.close();
    assert.ok(markedBefore > 0, 'the layout-1 marker counts what it marks');

    // The upgrade: today's agent over that state, the loop still running.
    await agent.start();
    const s = await agent.waitStatus((x) => x.ready && x.hooks.length === 1, 60_000, 'the upgraded agent');
    await new Promise((r) => setTimeout(r, 1000));
    const seen = await watch.stop();
    const sent = await synsSent(topo.client.ns, tcpBefore);
    const report = await agent.statusReport();
    t.diagnostic(
      `${seen.loop.ok}/${seen.loop.attempts} connections, ${sent} SYNs sent, ${seen.marked}/${seen.syns} captured with the token; marked ${counter(report, 'marked', 'up')}`,
    );

    assert.deepEqual(seen.loop.failures, [], 'every connection of the loop completed');
    assert.ok(sent >= 50, `the loop kept connecting: ${sent} SYNs`);
    assert.deepEqual(
      seen.unmarked,
      [],
      `every captured SYN carried the token, before, during and after the move (${seen.marked}/${seen.syns})`,
    );
    // The same pinned link, now running the current marker, alone at egress.
    const hook = s.hooks[0]!;
    assert.equal(hook.mode, 'tcx');
    assert.equal(hook.linkId, attached.linkId, 'the pinned link of layout 1 is kept');
    assert.notEqual(hook.progId, attached.progId, 'it runs the current marker');
    assert.deepEqual(
      (await kernelHooks(topo.client.ns, topo.client.dev)).tcx,
      [s.programId],
      'exactly one program at egress: the current one',
    );
    // Layout 1's pins are gone; the current layout's are in their own directory.
    const left = readdirSync(oldMaps).filter((f) => !statSync(path.join(oldMaps, f)).isDirectory());
    assert.deepEqual(left, [], 'no pin of layout 1 is left');
    assert.ok(existsSync(path.join(layoutDir(agent.stateDir), 'nt_counters')), 'the maps of the current layout are pinned');
    // Counts of the old program carried over: the marked counter counts every SYN sent, under either layout.
    assert.equal(
      pinnedCounters(agent.stateDir).marked ?? 0n,
      BigInt(sent),
      'marked counts every SYN the client sent, before and after the move',
    );
    assert.equal(counter(report, 'marked', 'up'), sent, '`netoken status` shows the same');
    const moved = agent
      .log()
      .split('\n')
      .find((l) => l.includes('moved off an older map layout'));
    assert.match(moved ?? '', /"countersCarried":[1-9].*"from":1.*"to":2/, `the agent says it moved: ${moved}`);
    await server.stop();
  } finally {
    await agent.cleanup();
  }
});
