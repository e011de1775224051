/**
 * The agent with only the capabilities the chart's pod gives it (CAP_BPF, CAP_NET_ADMIN,
 * CAP_PERFMON: no CAP_SYS_ADMIN, so no looking up BPF programs by id): a restarted agent still
 * knows its own XDP verifier from anyone else's, keeps it where it is, and removes it when the
 * policy goes.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { agentIn, policyYaml } from '../lib/agent.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { xdpProgId } from './reliability-lib.js';

/** CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39). */
const POD_CAPS = ((1n << 12n) | (1n << 38n) | (1n << 39n)).toString(16).padStart(16, '0');

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

test('with only BPF, NET_ADMIN and PERFMON, a restarted agent adopts its XDP verifier and removes it with the policy', async () => {
  const topo = await createTopology({ name: 'leastpriv', kind: 'pair' });
  topologies.push(topo);
  const agent = agentIn(topo.client.ns, 'leastpriv', { capabilities: ['bpf', 'net_admin', 'perfmon'] });
  try {
    agent.writePolicy(
      policyYaml([{ name: 'guard', spec: `interfaces: {names: [${topo.client.dev}]}\ningress: {action: Monitor}` }]),
    );
    await agent.start(['--ingress-attach', 'xdp-generic']);
    const first = await agent.waitStatus((s) => s.ready && s.hooks.length === 1, 20_000, 'the verifier attached');
    assert.equal(first.hooks[0]?.mode, 'xdp-generic');
    const pid = agent.child?.pid as number;
    assert.match(
      readFileSync(`/proc/${pid}/status`, 'utf8'),
      new RegExp(`^CapEff:\\s+${POD_CAPS}$`, 'm'),
      'the agent runs with exactly the three capabilities',
    );
    const prog = await xdpProgId(topo.client.ns, topo.client.dev);
    assert.ok(prog > 0, 'an XDP program is attached');

    // A graceful stop keeps the hook; the next agent must take it for its own.
    await agent.stop('SIGTERM');
    assert.equal(await xdpProgId(topo.client.ns, topo.client.dev), prog, 'the hook stays while the agent is away');
    // The status file is still the stopped agent's until the new one writes it: only one written since counts.
    const restartedAt = new Date().toISOString();
    await agent.start(['--ingress-attach', 'xdp-generic']);
    const again = await agent.waitStatus(
      (s) => s.updatedAt >= restartedAt && s.ready && s.hooks.length === 1 && s.reconciles >= 1,
      20_000,
      'the verifier adopted',
    );
    assert.equal(
      again.hooks[0]?.mode,
      'xdp-generic',
      `the restarted agent verifies at XDP again, not at tc beside an XDP program it took for someone else's:\n${agent.log().slice(-2000)}`,
    );
    assert.doesNotMatch(agent.log(), /another XDP program .* is attached/, 'its own program was not taken for a foreign one');

    agent.writePolicy('# no policies\n');
    await agent.waitStatus((s) => s.hooks.length === 0 && s.policies.length === 0, 20_000, 'the policy removed');
    assert.equal(await xdpProgId(topo.client.ns, topo.client.dev), 0, 'no XDP program is left');
  } finally {
    await agent.cleanup();
  }
});
