/**
 * The test cluster leaves nothing behind: stop() ends etcd and kube-apiserver and removes the
 * files, and so does an interrupted (SIGINT) or killed (SIGKILL) test process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { fixtureChild, processAlive, TestCluster } from './cluster.js';
import { sleep } from '../../src/lib/wait.js';

const clusterModule = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), 'cluster.js')).href;

const alive = processAlive;

async function waitGone(pids: number[], dir: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!pids.some(alive) && !existsSync(dir)) return;
    await sleep(200);
  }
  assert.deepEqual(pids.filter(alive), [], `processes still running ${ms} ms later`);
  assert.equal(existsSync(dir), false, `${dir} still exists ${ms} ms later`);
}

test('stop() ends etcd and kube-apiserver and removes the directory', async () => {
  const c = await TestCluster.start({ crds: false });
  const pids = c.pids();
  assert.equal(pids.length, 2, 'etcd and kube-apiserver are running');
  assert.ok(pids.every(alive));
  const who = await c.kubectlOk(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.groups}']);
  assert.match(who, /system:masters/, 'the admin identity is in system:masters');
  await c.stop();
  await waitGone(pids, c.dir, 1000);
});

for (const signal of ['SIGINT', 'SIGKILL'] as const) {
  test(`a test process ended by ${signal} leaves no cluster behind`, async () => {
    const script = `
      const { TestCluster } = await import(${JSON.stringify(clusterModule)});
      const c = await TestCluster.start({ crds: false });
      process.stdout.write(JSON.stringify({ dir: c.dir, pids: c.pids() }) + '\\n');
      setInterval(() => {}, 1 << 30);
    `;
    const { child, info, exited } = await fixtureChild<{ dir: string; pids: number[] }>(script, 120_000);
    assert.equal(info.pids.length, 2);
    assert.ok(info.pids.every(alive), 'cluster processes run before the signal');
    child.kill(signal);
    assert.equal(await exited, signal, `the child ends by ${signal}`);
    // SIGINT: the fixture's handler cleans up at once; SIGKILL: its watchdog notices within ~1 s.
    await waitGone(info.pids, info.dir, 10_000);
  });
}
