/**
 * Clean uninstall: every kind of hook the agent makes (TCX links at egress and ingress,
 * clsact filters at egress and ingress in qdiscs it created and in one that was there
 * before, the verifier's native XDP program, a tc verifier next to someone else's XDP
 * program), then every policy deleted and the agent stopped. Nothing of ours may be left:
 * no filter, no qdisc we created, no XDP program, no TCX link, no pin, no run file. What
 * was there before (a clsact qdisc, a foreign XDP program) stays.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { agentIn, bindingScriptIn, policyYaml, type AgentRun } from '../lib/agent.js';
import { fixture } from '../lib/native.js';
import { createTopology, exec, run, type Topology } from '../lib/netns.js';
import { startServer } from '../lib/tcp.js';
import { tcState, xdpProgId } from './reliability-lib.js';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

/** TCX program ids at both hooks of `dev` in `ns`. */
async function tcx(ns: string, dev: string): Promise<{ ingress: number[]; egress: number[] }> {
  const script = `const b = binding(); const i = Number(process.argv[1]);
console.log(JSON.stringify({ ingress: b.tcxQuery(i, 'ingress'), egress: b.tcxQuery(i, 'egress') }));`;
  const idx = await run('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/ifindex`]);
  const stdout = await bindingScriptIn(ns, script, [idx.stdout.trim()]);
  return JSON.parse(stdout) as { ingress: number[]; egress: number[] };
}

/** Everything under a directory, relative paths. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    out.push(e.name);
    if (e.isDirectory()) out.push(...tree(path.join(dir, e.name)).map((x) => `${e.name}/${x}`));
  }
  return out;
}

describe('clean uninstall', () => {
  test('deleting every policy and stopping the agent leaves no filter, qdisc, XDP program, link, pin or run file of ours; what was there before stays', async (t) => {
    const topo = await createTopology({ name: 'uninst', kind: 'pair' });
    topologies.push(topo);
    // Two more veth pairs on the server side: one with a clsact qdisc of its own, one with someone else's XDP program.
    const own = `nto${process.pid % 10000}`;
    const busy = `ntb${process.pid % 10000}`;
    const server = agentIn(topo.server.ns, 'uninst-s');
    const client = agentIn(topo.client.ns, 'uninst-c');
    try {
      for (const d of [own, busy]) {
        await run('ip', ['-n', topo.server.ns, 'link', 'add', d, 'type', 'veth', 'peer', 'name', `${d}p`]);
        await run('ip', ['-n', topo.server.ns, 'link', 'set', d, 'up']);
        await run('ip', ['-n', topo.server.ns, 'link', 'set', `${d}p`, 'up']);
      }
      await exec(topo.server.ns, 'tc', ['qdisc', 'add', 'dev', own, 'clsact']);
      const noop = fixture('foreign');
      await exec(topo.server.ns, 'ip', ['link', 'set', 'dev', busy, 'xdpgeneric', 'obj', noop, 'sec', 'xdp']);
      const foreignXdp = await xdpProgId(topo.server.ns, busy);
      assert.ok(foreignXdp > 0, 'the foreign XDP program is attached');
      const echo = await startServer(topo.server.ns, { port: 0 });

      // Server: clsact filters (--attach tc) at egress on two interfaces and at ingress for the verifier
      // (veth is verified at tc; where someone else's XDP program is, tc is all there is anyway).
      server.writePolicy(
        policyYaml([
          { name: 'out', spec: `interfaces: {names: [${topo.server.dev}, ${own}]}\negress: {}` },
          {
            name: 'in',
            spec: `interfaces: {names: [${topo.server.dev}, ${busy}]}\ningress: {action: Monitor, ports: [${echo.port}]}`,
          },
        ]),
      );
      await server.start(['--attach', 'tc']);
      const ss = await server.waitStatus((s) => s.hooks.length === 4 && s.ready, 20_000, 'four hooks on the server');
      const modes = ss.hooks.map((h) => `${h.name}/${h.direction}=${h.mode}`).sort();
      assert.deepEqual(
        modes,
        [`${busy}/ingress=tc`, `${own}/egress=tc`, `${topo.server.dev}/egress=tc`, `${topo.server.dev}/ingress=tc`].sort(),
      );
      // Client: a TCX link at egress, the verifier at native XDP (asked for).
      client.writePolicy(
        policyYaml([
          { name: 'mark', spec: `interfaces: {names: [${topo.client.dev}]}\negress: {}` },
          { name: 'guard', spec: `interfaces: {names: [${topo.client.dev}]}\ningress: {action: Monitor}` },
        ]),
      );
      await client.start(['--ingress-attach', 'xdp-native']);
      const cs = await client.waitStatus((s) => s.hooks.length === 2 && s.ready, 20_000, 'two hooks on the client');
      assert.deepEqual(cs.hooks.map((h) => `${h.direction}=${h.mode}`).sort(), ['egress=tcx', 'ingress=xdp-native']);
      assert.equal(tree(path.join(client.stateDir, 'links')).length, 1, 'one link pin');
      t.diagnostic(`installed: server ${modes.join(', ')}; client ${cs.hooks.map((h) => `${h.direction}=${h.mode}`).join(', ')}`);

      // Every policy deleted (the files keep only comments), then a graceful stop.
      const before = { server: ss.reconciles, client: cs.reconciles };
      server.writePolicy('# no policies\n');
      client.writePolicy('# no policies\n');
      await server.waitStatus(
        (s) => s.reconciles > before.server && s.hooks.length === 0 && s.policies.length === 0,
        20_000,
        'the server without policies',
      );
      await client.waitStatus(
        (s) => s.reconciles > before.client && s.hooks.length === 0 && s.policies.length === 0,
        20_000,
        'the client without policies',
      );
      await server.stop();
      await client.stop();

      // The kernel: no hook of ours anywhere, the foreign ones and the old qdisc in place.
      for (const dev of [topo.server.dev, own, busy]) {
        const tcs = await tcState(topo.server.ns, dev);
        assert.doesNotMatch(
          tcs.egress + tcs.ingress,
          /handle 0x4e54|nt_mark|nt_verify/,
          `no filter of ours on ${dev}:\n${tcs.egress}${tcs.ingress}`,
        );
        if (dev === own) assert.match(tcs.qdiscs, /clsact/, `the clsact qdisc that was on ${own} before stays`);
        else assert.doesNotMatch(tcs.qdiscs, /clsact/, `the clsact qdisc we made on ${dev} is gone:\n${tcs.qdiscs}`);
      }
      assert.equal(await xdpProgId(topo.client.ns, topo.client.dev), 0, "no XDP program on the client's verified interface");
      assert.equal(await xdpProgId(topo.server.ns, busy), foreignXdp, 'the foreign XDP program stays');
      assert.deepEqual(await tcx(topo.client.ns, topo.client.dev), { ingress: [], egress: [] }, 'no TCX program on the client');
      const ctc = await tcState(topo.client.ns, topo.client.dev);
      assert.doesNotMatch(ctc.qdiscs, /clsact/, 'no qdisc on the client');
      // No pin, no state directory, no run file.
      for (const a of [server, client] as AgentRun[]) {
        assert.deepEqual(tree(a.stateDir), [], `nothing left under ${a.stateDir}`);
        assert.equal(existsSync(a.stateDir), false, `${a.stateDir} is gone`);
        assert.deepEqual(tree(a.runDir), [], `no run file left in ${a.runDir}`);
      }
      const d = await server.cli(['detach']);
      assert.match(
        d.stdout,
        /detached: 0 TCX link\(s\), 0 tc filter\(s\), 0 XDP program\(s\); removed 0 pin\(s\)/,
        'netoken detach finds nothing left to do',
      );
      await echo.stop();
      await exec(topo.server.ns, 'ip', ['link', 'set', 'dev', busy, 'xdpgeneric', 'off']);
    } finally {
      await server.cleanup();
      await client.cleanup();
    }
  });
});
