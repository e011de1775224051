/**
 * Hostile and broken input for the standalone agent. Each case ends in a clear answer in
 * `netoken status` and the log, the other policies keep marking (checked on the wire), and
 * the agent keeps running: overlapping destinations (the documented winner, on the wire),
 * 10 000 destinations and one more, an interface deleted and re-created, a kernel that
 * refuses a map (140 000 trie entries for 131 072 slots) or an XDP program (veth MTU), a
 * marker object the kernel's verifier rejects, and a policy file that no YAML reader can
 * turn into data.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { AgentStatus } from '../../src/agent/agent.js';
import { TOKEN, agentIn, kernelHooks, policyYaml, type AgentRun } from '../lib/agent.js';
import { fixture } from '../lib/native.js';
import { createTopology, exec, run, type Topology } from '../lib/netns.js';
import { tokenOnSyn } from '../lib/syn-token.js';
import { startServer } from '../lib/tcp.js';
import { destinationList, destinations, pinnedCounters } from './reliability-lib.js';
import { sleep } from '../../src/lib/wait.js';

const TOKEN_A = Buffer.from('a1a1a1a1a1a1a1a1', 'hex');
const TOKEN_B = Buffer.from('b2b2b2b2b2b2b2b2', 'hex');
const TOKEN_C = Buffer.from('c3c3c3c3c3c3c3c3', 'hex');

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

/** Log lines (JSON) of the agent whose message or fields match `re`. */
function logLines(agent: AgentRun, re: RegExp): string[] {
  return agent
    .log()
    .split('\n')
    .filter((l) => re.test(l));
}

async function statusTable(agent: AgentRun): Promise<string> {
  const r = await agent.cli(['status']);
  return r.stdout;
}

function alive(agent: AgentRun): void {
  assert.ok(
    agent.child && agent.child.exitCode === null && agent.child.signalCode === null,
    `the agent is still running\n${agent.log().slice(-3000)}`,
  );
}

describe('hostile and broken input', () => {
  test('overlapping destinations: the longest prefix wins per packet; for the same prefix the name that sorts first, the other reports DestinationConflict', async () => {
    const t = await createTopology({ name: 'overlap', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'overlap');
    try {
      // A second server address in the same /24, only the wide policy covers it.
      const wideOnly = t.server.ipv4.replace(/\.\d+$/, '.77');
      await exec(t.server.ns, 'ip', ['addr', 'add', `${wideOnly}/32`, 'dev', t.server.dev]);
      const server = await startServer(t.server.ns, { port: 0 });
      const subnet = `${t.server.ipv4.replace(/\.\d+$/, '.0')}/24`;
      agent.writePolicy(
        policyYaml([
          {
            name: 'a-wide',
            token: TOKEN_A,
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "${subnet}"}]}`,
          },
          {
            name: 'b-narrow',
            token: TOKEN_B,
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "${t.server.ipv4}/32"}]}`,
          },
          {
            name: 'c-same',
            token: TOKEN_C,
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "${t.server.ipv4}/32"}]}`,
          },
        ]),
      );
      await agent.start();
      const s = await agent.waitStatus(
        (x) => x.hooks.length === 1 && x.reconciles >= 1,
        20_000,
        'three policies on one interface',
      );
      assert.equal(
        (await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'),
        TOKEN_B.toString('hex'),
        'the /32 beats the /24, and b-narrow beats c-same (sorts first)',
      );
      assert.equal(
        (await tokenOnSyn(t, wideOnly, server.port))?.toString('hex'),
        TOKEN_A.toString('hex'),
        'an address only the /24 covers gets a-wide',
      );
      const c = s.policies.find((p) => p.name === 'c-same')!;
      assert.deepEqual(
        c.warnings.map((w) => w.reason),
        ['DestinationConflict'],
        `c-same reports the conflict: ${JSON.stringify(c)}`,
      );
      assert.match(c.warnings[0]!.message, /also claimed by policy "b-narrow", which wins/);
      assert.deepEqual(s.policies.find((p) => p.name === 'b-narrow')!.warnings, [], 'the winner has no warning');
      assert.match(await statusTable(agent), /c-same .*DestinationConflict: .*b-narrow/, 'netoken status shows it');
      assert.ok(logLines(agent, /DestinationConflict/).length > 0, 'and the log says it');
      alive(agent);
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('10 000 destinations apply and mark; 10 001 are refused with a clear error and the last good version stays', async () => {
    const t = await createTopology({ name: 'tenk', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'tenk');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      const file = (n: number): string =>
        policyYaml([
          {
            name: 'many',
            spec: `interfaces: {names: [${t.client.dev}]}\negress:\n  destinations: ${destinationList([...destinations(n - 1), `${t.server.ipv4}/32`], [server.port])}`,
          },
          {
            name: 'other',
            token: TOKEN_A,
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "192.0.2.0/24"}]}`,
          },
        ]);
      agent.writePolicy(file(10_000));
      await agent.start();
      const s1 = await agent.waitStatus((x) => x.hooks.length === 1 && x.ready, 60_000, '10 000 destinations applied');
      assert.equal(
        (await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'),
        TOKEN.toString('hex'),
        'the 10 000th destination is marked',
      );
      const table = await statusTable(agent);
      assert.match(table, /agent: ready/);
      assert.match(table, /many\s+1\s+yes\s+\S+\s+1\b/, `status shows the policy with one SYN marked:\n${table}`);

      agent.writePolicy(file(10_001));
      const s2 = await agent.waitStatus(
        (x) => x.reconciles > s1.reconciles && x.documentErrors.length > 0,
        60_000,
        'the 10 001 destinations refused',
      );
      assert.match(s2.documentErrors[0]!.where, /TokenPolicy "many"/);
      assert.match(s2.documentErrors[0]!.message, /spec\.egress\.destinations: at most 10000 items, got 10001/);
      assert.equal(s2.policies.find((p) => p.name === 'many')?.generation, 1, 'the last good version stays applied');
      assert.equal(
        (await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'),
        TOKEN.toString('hex'),
        'and keeps marking',
      );
      assert.match(await statusTable(agent), /REJECTED INPUT[\s\S]*at most 10000 items, got 10001/);
      assert.ok(logLines(agent, /at most 10000 items/).length > 0, 'the log says it');
      alive(agent);
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('an interface deleted and re-created while the agent runs: the policy reports it missing, then marking resumes on the new one', async () => {
    const t = await createTopology({ name: 'flap', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'flap');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(
        policyYaml([
          { name: 'flap', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` },
          { name: 'steady', token: TOKEN_A, spec: `interfaces: {names: [lo]}\negress: {}` },
        ]),
      );
      await agent.start();
      const s1 = await agent.waitStatus((x) => x.hooks.length === 2 && x.ready, 20_000, 'both hooks');
      const old = s1.hooks.find((h) => h.name === t.client.dev)!;
      assert.equal((await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'), TOKEN.toString('hex'));

      await exec(t.client.ns, 'ip', ['link', 'del', 'dev', t.client.dev]);
      const s2 = await agent.waitStatus((x) => x.hooks.length === 1 && !x.ready, 15_000, 'the interface gone');
      const flap = s2.policies.find((p) => p.name === 'flap')!;
      assert.equal(flap.errors[0]?.reason, 'InterfaceNotFound', JSON.stringify(flap));
      assert.match(flap.errors[0]!.message, new RegExp(`"${t.client.dev}" does not exist`));
      assert.equal(s2.hooks[0]?.name, 'lo', 'the other policy keeps its hook');
      assert.deepEqual(readdirSync(path.join(agent.stateDir, 'links')), ['egress-1'], 'the defunct link pin is gone');
      assert.match(await statusTable(agent), new RegExp(`flap .*InterfaceNotFound: .*${t.client.dev}`));

      // The same names and addresses on a new veth pair (new ifindexes).
      await run('ip', [
        '-n',
        t.client.ns,
        'link',
        'add',
        t.client.dev,
        'type',
        'veth',
        'peer',
        'name',
        t.server.dev,
        'netns',
        t.server.ns,
      ]);
      for (const [ns, dev, cidr] of [
        [t.client.ns, t.client.dev, t.client.ipv4Cidr],
        [t.server.ns, t.server.dev, t.server.ipv4Cidr],
      ] as const) {
        await run('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
        await run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
        await exec(ns, 'ethtool', ['-K', dev, 'tx', 'off']);
      }
      const s3 = await agent.waitStatus((x) => x.hooks.length === 2 && x.ready, 15_000, 'the new interface attached');
      const fresh = s3.hooks.find((h) => h.name === t.client.dev)!;
      assert.notEqual(fresh.ifindex, old.ifindex, 'a new interface');
      assert.equal(
        (await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'),
        TOKEN.toString('hex'),
        'marking resumed on the new interface',
      );
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s3.programId], 'one program on it');
      assert.deepEqual(
        readdirSync(path.join(agent.stateDir, 'links')).sort(),
        ['egress-1', `egress-${fresh.ifindex}`].sort(),
        'one link pin per live hook',
      );
      assert.ok(logLines(agent, /hook attached/).length >= 3, 'the log says it');
      alive(agent);
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('the kernel refuses a map (140 000 trie entries, 131 072 slots): that policy reports KernelRefused, the others keep marking; a smaller edit applies', async (ctx) => {
    const t = await createTopology({ name: 'full', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'full');
    const dummies = Array.from({ length: 14 }, (_, i) => `ntfull${i}`);
    try {
      // Seven veth pairs with both ends here (the kernel may have no dummy driver).
      for (let i = 0; i < dummies.length; i += 2) {
        await run('ip', ['-n', t.client.ns, 'link', 'add', dummies[i]!, 'type', 'veth', 'peer', 'name', dummies[i + 1]!]);
      }
      for (const d of dummies) await run('ip', ['-n', t.client.ns, 'link', 'set', d, 'up']);
      const server = await startServer(t.server.ns, { port: 0 });
      const file = (pattern: string): string =>
        policyYaml([
          {
            name: 'huge',
            token: TOKEN_A,
            spec: `interfaces: {patterns: ["${pattern}"]}\negress:\n  destinations: ${destinationList(destinations(10_000))}`,
          },
          {
            name: 'small',
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "${t.server.ipv4}/32"}]}`,
          },
        ]);
      agent.writePolicy(
        policyYaml([
          {
            name: 'small',
            spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: "${t.server.ipv4}/32"}]}`,
          },
        ]),
      );
      await agent.start();
      const s0 = await agent.waitStatus((x) => x.hooks.length === 1 && x.ready, 20_000, 'small alone');

      agent.writePolicy(file('ntfull*'));
      const s1 = await agent.waitStatus(
        (x) => x.reconciles > s0.reconciles && x.policies.length === 2,
        90_000,
        'the refused policy reported',
      );
      const huge = s1.policies.find((p) => p.name === 'huge')!;
      assert.deepEqual(
        huge.errors.map((e) => e.reason),
        ['KernelRefused'],
        JSON.stringify(huge),
      );
      ctx.diagnostic(`huge: ${huge.errors[0]!.message}`);
      assert.match(huge.errors[0]!.message, /the kernel refused this policy's BPF state: .*(ENOSPC|E2BIG|space)/i);
      assert.deepEqual(huge.interfaces, [], 'nothing of it is attached');
      assert.equal(s1.ready, false);
      assert.deepEqual(
        s1.hooks.map((h) => h.name),
        [t.client.dev],
        "only the small policy's hook",
      );
      assert.equal(
        (await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'),
        TOKEN.toString('hex'),
        'the small policy keeps marking',
      );
      assert.match(await statusTable(agent), /huge .*KernelRefused: the kernel refused/);
      assert.ok(
        logLines(agent, /the kernel refused a policy/).some((l) => l.includes('"policy":"huge"')),
        'the log names the policy',
      );
      // A refused version is not tried again while nothing changes.
      const again = logLines(agent, /the kernel refused a policy/).length;
      await sleep(1500);
      assert.equal(logLines(agent, /the kernel refused a policy/).length, again, 'no retry storm');

      agent.writePolicy(file('ntfull1'));
      const s2 = await agent.waitStatus((x) => x.ready && x.hooks.length === 2, 60_000, 'the smaller edit applied');
      assert.deepEqual(s2.hooks.map((h) => h.name).sort(), ['ntfull1', t.client.dev].sort());
      assert.equal((await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'), TOKEN.toString('hex'));
      alive(agent);
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('the kernel refuses native XDP on a veth with a 9000-byte MTU: the verifier hook fails clearly, marking elsewhere goes on; auto verifies it at tc', async (ctx) => {
    const t = await createTopology({ name: 'xdpmtu', kind: 'pair' });
    topologies.push(t);
    const forced = agentIn(t.server.ns, 'xdpforced');
    const marker = agentIn(t.client.ns, 'xdpmark');
    try {
      for (const [ns, dev] of [
        [t.client.ns, t.client.dev],
        [t.server.ns, t.server.dev],
      ] as const)
        await run('ip', ['-n', ns, 'link', 'set', dev, 'mtu', '9000']);
      const server = await startServer(t.server.ns, { port: 0 });
      marker.writePolicy(policyYaml([{ name: 'mark', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` }]));
      await marker.start();
      await marker.waitStatus((x) => x.hooks.length === 1 && x.ready, 20_000, 'the marker');
      const guard = policyYaml([
        { name: 'guard', spec: `interfaces: {names: [${t.server.dev}]}\ningress: {action: Monitor, ports: [${server.port}]}` },
        { name: 'out', spec: 'interfaces: {names: [lo]}\negress: {}' },
      ]);
      forced.writePolicy(guard);
      await forced.start(['--ingress-attach', 'xdp-native']);
      const s = await forced.waitStatus((x) => x.reconciles >= 1 && x.hookErrors.length === 1, 20_000, 'the refused XDP hook');
      assert.equal(s.hookErrors[0]!.reason, 'AttachFailed');
      ctx.diagnostic(`${s.hookErrors[0]!.name}: ${s.hookErrors[0]!.message}`);
      assert.equal(s.hookErrors[0]!.name, t.server.dev);
      assert.deepEqual(
        s.hooks.map((h) => `${h.name}/${h.direction}`),
        ['lo/egress'],
        "the other policy's hook is in place",
      );
      assert.equal(s.ready, false);
      assert.match(await statusTable(forced), new RegExp(`${t.server.dev}\\s+\\d+\\s+ingress\\s+FAILED`));
      assert.ok(logLines(forced, /attach failed/).length > 0, 'the log says it');
      assert.equal((await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'), TOKEN.toString('hex'), 'marking goes on');
      alive(forced);

      await forced.stop();
      await forced.start();
      const s2 = await forced.waitStatus((x) => x.ready && x.hooks.some((h) => h.direction === 'ingress'), 20_000, 'auto: tc');
      assert.equal(
        s2.hooks.find((h) => h.direction === 'ingress')!.mode,
        'tcx',
        'auto verifies a veth at tc, never at generic XDP',
      );
      await server.stop();
    } finally {
      await forced.cleanup();
      await marker.cleanup();
    }
  });

  test("a marker object the kernel rejects: the agent exits with the verifier's reason and touches nothing; the pinned hook keeps marking", async (ctx) => {
    const t = await createTopology({ name: 'reject', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'reject');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(policyYaml([{ name: 'r', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` }]));
      await agent.start();
      const s1 = await agent.waitStatus((x) => x.hooks.length === 1 && x.ready, 20_000, 'the hook');
      await agent.stop();
      const before = pinnedCounters(agent.stateDir).marked ?? 0n;

      const rejected = fixture('rejected');
      assert.ok(existsSync(rejected), 'the rejected test object is built');
      await agent.start(['--bpf-object', rejected]);
      const child = agent.child!;
      const code = await new Promise<number | null>((resolve) =>
        child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (c) => resolve(c)),
      );
      agent.child = null;
      assert.equal(code, 1, 'the agent exits with an error');
      ctx.diagnostic(
        agent
          .log()
          .split('\n')
          .filter((l) => l.startsWith('netoken:'))
          .join(' / '),
      );
      assert.match(
        agent.log(),
        /netoken: .*(Permission denied|invalid|verifier|EACCES|EINVAL)/i,
        `the reason is printed:\n${agent.log().slice(-2000)}`,
      );
      assert.deepEqual(
        (await kernelHooks(t.client.ns, t.client.dev)).tcx,
        [s1.programId],
        'the pinned hook and its program are untouched',
      );
      assert.equal((await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'), TOKEN.toString('hex'), 'and keep marking');
      assert.equal(pinnedCounters(agent.stateDir).marked, before + 1n, 'and counting');

      await agent.start();
      const s2 = await agent.waitStatus(
        (x) => x.programId !== s1.programId && x.hooks.length === 1 && x.ready,
        20_000,
        'a good object again',
      );
      assert.equal(s2.hooks[0]!.linkId, s1.hooks[0]!.linkId, 'the same link');
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('a policy file no YAML reader can turn into data (an alias without its anchor): reported, nothing changes, the agent keeps running', async () => {
    const t = await createTopology({ name: 'alias', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'alias');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      const good = policyYaml([{ name: 'a', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` }]);
      agent.writePolicy(good);
      await agent.start();
      const s1 = await agent.waitStatus((x) => x.hooks.length === 1 && x.ready, 20_000, 'the hook');
      agent.writePolicy(
        `${good}---\napiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {current: *${TOKEN_C.toString('base64').replace(/=/g, '')}}\n`,
      );
      const s2 = await agent.waitStatus((x) => x.documentErrors.length > 0, 15_000, 'the broken file reported');
      assert.match(s2.documentErrors[0]!.message, /invalid YAML: the document cannot be read as data/);
      assert.ok(!JSON.stringify(s2).includes(TOKEN_C.toString('base64').slice(0, 8)), 'the error does not quote the file');
      assert.equal(s2.hooks.length, 1, 'nothing changed');
      alive(agent);
      assert.equal((await tokenOnSyn(t, t.server.ipv4, server.port))?.toString('hex'), TOKEN.toString('hex'));
      assert.ok((s2 as AgentStatus).reconciles >= s1.reconciles);
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });
});
