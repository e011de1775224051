/**
 * Keyed tokens between hosts whose clocks disagree by a few seconds. The marker runs with
 * its wall clock shifted (libfaketime under the agent process: it measures the kernel's
 * clock against that one, exactly as on a host whose clock is off), the verifier with the
 * real one. Within token.clockSkewSeconds, connections run through several epoch boundaries
 * without one refused SYN; a clock further off than that has its SYNs refused near every
 * boundary, which shows the window is real.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { agentIn, counter, ROOT, type AgentRun } from '../lib/agent.js';
import { createTopology, spawnIn, waitForExit, type Topology } from '../lib/netns.js';
import { startServer } from '../lib/tcp.js';

const CONNECT_LOOP = path.join(ROOT, 'dist/test/lib/connect-loop.js');
const FAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const KEY = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
/** Short epochs, so that a run crosses several boundaries. */
const EPOCH_SECONDS = 6;
const SKEW_SECONDS = 3;
const LOOP_MS = 14_000;

function files(port: number, spec: string): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: skew}
spec:
  token: {mode: Keyed, secretRef: {name: skew-key}, epochSeconds: ${EPOCH_SECONDS}, clockSkewSeconds: ${SKEW_SECONDS}}
${spec.replace('PORT', String(port)).replace(/^/gm, '  ')}
---
apiVersion: v1
kind: Secret
metadata: {name: skew-key}
type: Opaque
data: {current: ${KEY.toString('base64')}}
`;
}

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('clock skew between marker and verifier', () => {
  test('a marker whose clock is 2 s ahead, then one 2 s behind: every SYN valid across epoch boundaries; 5 s ahead: refused near each boundary', async (t) => {
    assert.ok(existsSync(FAKETIME), `libfaketime (Debian package faketime) is needed: ${FAKETIME}`);
    const topo = await createTopology({ name: 'skew', kind: 'pair' });
    topologies.push(topo);
    const verifier = agentIn(topo.server.ns, 'skew-v');
    const agents: AgentRun[] = [verifier];
    try {
      const echo = await startServer(topo.server.ns, { port: 0 });
      verifier.writePolicy(
        files(echo.port, `interfaces: {names: [${topo.server.dev}]}\ningress: {action: Enforce, ports: [PORT]}`),
      );
      await verifier.start();
      await verifier.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');

      const runWith = async (offset: string): Promise<{ failures: number; attempts: number; invalid: number; valid: number }> => {
        const marker = agentIn(topo.client.ns, `skew-m${offset.replace(/[+-]/, (c) => (c === '+' ? 'p' : 'm'))}`, {
          env: { LD_PRELOAD: FAKETIME, FAKETIME: offset, DONT_FAKE_MONOTONIC: '1' },
        });
        agents.push(marker);
        marker.writePolicy(
          files(
            echo.port,
            `interfaces: {names: [${topo.client.dev}]}\negress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [PORT]}]}`,
          ),
        );
        await marker.start();
        await marker.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, `the marker (clock ${offset})`);
        const before = await verifier.statusReport();
        const loop = spawnIn(topo.client.ns, process.execPath, [
          CONNECT_LOOP,
          topo.server.ipv4,
          String(echo.port),
          String(LOOP_MS),
          '5000',
          '10',
        ]);
        let out = '';
        loop.stdout?.setEncoding('utf8');
        loop.stdout?.on('data', (d: string) => (out += d));
        assert.ok(await waitForExit(loop, LOOP_MS + 20_000), 'the loop ends');
        const after = await verifier.statusReport();
        await marker.cleanup();
        const summary = JSON.parse(out.trim()) as { attempts: number; failures: { error: string }[] };
        if (summary.failures.length) t.diagnostic(`clock ${offset}: failures ${JSON.stringify(summary.failures.slice(0, 5))}`);
        const d = (name: string): number => counter(after, name, 'skew') - counter(before, name, 'skew');
        return {
          failures: summary.failures.length,
          attempts: summary.attempts,
          invalid: d('verify_invalid'),
          valid: d('verify_valid'),
        };
      };

      for (const offset of ['+2s', '-2s']) {
        const r = await runWith(offset);
        t.diagnostic(
          `marker clock ${offset}: ${r.attempts} connections, ${r.failures} failed; verifier counted ${r.valid} valid, ${r.invalid} invalid`,
        );
        assert.ok(r.attempts >= 20, `the loop kept connecting: ${r.attempts}`);
        assert.equal(r.failures, 0, `clock ${offset}: no connection fails`);
        assert.equal(r.invalid, 0, `clock ${offset}: no SYN is refused as invalid`);
        assert.ok(r.valid >= r.attempts, `clock ${offset}: every SYN was valid (${r.valid} for ${r.attempts} connections)`);
      }
      const far = await runWith('+5s');
      t.diagnostic(`marker clock +5s: ${JSON.stringify(far)}`);
      assert.ok(
        far.invalid > 0,
        `a clock ${5 - SKEW_SECONDS} s past the tolerated skew has SYNs refused near the boundaries: ${JSON.stringify(far)}`,
      );
      await echo.stop();
    } finally {
      for (const a of agents) await a.cleanup();
    }
  });
});
