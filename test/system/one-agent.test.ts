/**
 * One agent per state directory: a second agent over the same pins (a pod still terminating
 * beside its replacement, a second copy started by hand), or over the same run directory, waits
 * for the first to stop, and gives up with a clear error if it does not; it never touches the
 * first one's hooks or maps meanwhile. `netoken detach` refuses to remove hooks that a running
 * agent keeps.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { agentIn, kernelHooks, policyYaml } from '../lib/agent.js';
import { createTopology, waitForExit, type Topology } from '../lib/netns.js';
import { waitUntil } from '../../src/lib/wait.js';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('one agent per state directory', () => {
  test('a second agent waits for the first to stop, or gives up clearly; detach refuses while one runs', async () => {
    const t = await createTopology({ name: 'one', kind: 'pair' });
    topologies.push(t);
    const first = agentIn(t.client.ns, 'first');
    const second = agentIn(t.client.ns, 'second');
    const third = agentIn(t.client.ns, 'third');
    const policy = policyYaml([
      {
        name: 'web',
        spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: ${t.server.ipv4}/32}]}`,
      },
    ]);
    try {
      first.writePolicy(policy);
      second.writePolicy(policy);
      third.writePolicy(policy);
      await first.start();
      const s1 = await first.waitStatus((s) => s.hooks.length === 1 && s.ready, 15_000, 'the first agent');
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s1.programId]);
      const firstPid = first.child!.pid!;

      // 1. A second agent on the same state directory gives up after its lock timeout.
      await second.start(['--state-dir', first.stateDir, '--lock-timeout', '2s']);
      assert.ok(await waitForExit(second.child!, 20_000), `the second agent exits\n${second.log()}`);
      assert.equal(second.child!.exitCode, 1, `exit code of the second agent\n${second.log()}`);
      second.child = null;
      const gaveUp = second.log();
      assert.match(gaveUp, /waiting for it to stop/, 'it said that it waits');
      assert.ok(
        gaveUp.includes(
          `another netoken agent (pid ${firstPid}) is using the state directory ${first.stateDir} and did not stop within 2 s`,
        ),
        `it names the holder and the directory:\n${gaveUp}`,
      );
      assert.match(gaveUp, /--state-dir and --run-dir of its own/, 'it says what to do');
      assert.doesNotMatch(gaveUp, /agent starting|hook attached|policy applied/, 'it did nothing else');
      assert.deepEqual(
        (await kernelHooks(t.client.ns, t.client.dev)).tcx,
        [s1.programId],
        "the first agent's program alone is still attached",
      );
      assert.equal(existsSync(path.join(second.runDir, 'status.json')), false, 'the second agent wrote no status');

      // 1b. So does one with a state directory of its own but the first agent's run directory.
      await third.start(['--run-dir', first.runDir, '--lock-timeout', '1s']);
      assert.ok(await waitForExit(third.child!, 20_000), `the third agent exits\n${third.log()}`);
      assert.equal(third.child!.exitCode, 1, `exit code of the third agent\n${third.log()}`);
      third.child = null;
      assert.ok(
        third
          .log()
          .includes(`another netoken agent (pid ${firstPid}) is using the run directory ${first.runDir} and did not stop`),
        third.log(),
      );
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s1.programId], 'still the first program alone');
      assert.equal(first.status()?.programId, s1.programId, "the first agent's status is its own");

      // 2. detach refuses while the first agent runs, and removes nothing.
      const d = await first.cli(['detach']);
      assert.equal(d.code, 1, `detach exits 1\n${d.stdout}${d.stderr}`);
      assert.ok(
        d.stderr.includes(
          `another netoken agent (pid ${firstPid}) is running with the state directory ${first.stateDir}: stop it first`,
        ),
        d.stderr,
      );
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s1.programId], 'the hook is still there');
      assert.ok(existsSync(first.stateDir), 'the pins are still there');

      // 3. A second agent started while the first runs takes over once the first stops.
      const mark = second.log().length;
      const since = (): string => second.log().slice(mark);
      await second.start(['--state-dir', first.stateDir]);
      await waitUntil('the second agent to wait for the first', 15_000, () =>
        since().includes('waiting for it to stop') ? true : undefined,
      );
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s1.programId], 'while it waits, nothing changed');
      await first.stop();
      const s2 = await second.waitStatus(
        (s) => s.hooks.length === 1 && s.ready && s.programId !== s1.programId,
        20_000,
        'the second agent, once the first stopped',
      );
      assert.match(since(), /this one takes over its directories/);
      assert.deepEqual((await kernelHooks(t.client.ns, t.client.dev)).tcx, [s2.programId], 'one program: the new one');
      assert.equal(s2.hooks[0]!.linkId, s1.hooks[0]!.linkId, 'the pinned link is reused');
      await second.stop();
    } finally {
      await second.stop('SIGKILL');
      await first.cleanup();
      await second.cleanup();
      await third.cleanup();
    }
  });
});
