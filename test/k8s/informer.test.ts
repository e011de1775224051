/**
 * The informer (src/lib/informer.ts) and the work queue's conflict handling against a real
 * kube-apiserver: a collection listed in pages, changes delivered with the object before them,
 * watches that end on their server-side timeout and resume from where they stopped without a
 * second list, bookmarks that carry the resourceVersion on while nothing watched changes, and
 * a write refused with 409 Conflict (a plan made from a stale read) retried quietly until it
 * lands.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CoreV1Api, KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { type InformerEvent, Informer } from '../../src/lib/informer.js';
import { CoreV1Api as SecretsApi } from '../../src/lib/kube-client.js';
import { isConflict } from '../../src/lib/kube.js';
import { silentLogger } from '../../src/lib/log.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import type { TokenPolicy } from '../../src/lib/types.js';
import { KeyedQueue } from '../../src/lib/workqueue.js';
import { applySecretPlan, planSecret } from '../../src/operator/secrets.js';
import { TestCluster } from './cluster.js';
import { run } from '../lib/run.js';

const NS = 'informer';
const OTHER = 'elsewhere';

describe('informer and work queue against a real API server', () => {
  let cluster: TestCluster;
  let kc: KubeConfig;
  let core: CoreV1Api;

  before(async () => {
    cluster = await TestCluster.start({ crds: false });
    kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    await cluster.kubectlOk(['create', 'namespace', NS]);
    await cluster.kubectlOk(['create', 'namespace', OTHER]);
    const docs = Array.from(
      { length: 250 },
      (_, i) =>
        `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-${String(i).padStart(3, '0')}, namespace: ${NS}}\ndata: {v: "${i}"}\n`,
    );
    await cluster.kubectlOk(['create', '-f', '-'], { input: docs.join('---\n'), timeoutMs: 120_000 });
  });

  after(async () => {
    await cluster?.stop();
  });

  /** An informer of the test namespace's ConfigMaps that records its events and its list pages. */
  const configMaps = (o: { pageSize?: number; minWatchTimeoutSeconds?: number } = {}) => {
    const events: InformerEvent<V1ConfigMap>[] = [];
    let pages = 0;
    const informer = new Informer<V1ConfigMap, V1ConfigMap>({
      kc,
      log: silentLogger(),
      what: 'configmaps',
      path: `/api/v1/namespaces/${NS}/configmaps`,
      list: (page) => {
        pages++;
        return core.listNamespacedConfigMap({ namespace: NS, ...page });
      },
      transform: (cm) => ({
        metadata: { name: cm.metadata?.name, namespace: cm.metadata?.namespace, resourceVersion: cm.metadata?.resourceVersion },
        data: cm.data,
      }),
      onEvent: (e) => events.push(e),
      ...o,
    });
    return { informer, events, pages: () => pages };
  };

  test('lists in pages, then reports every change with the object before it', async () => {
    const { informer, events, pages } = configMaps({ pageSize: 100 });
    await informer.start();
    try {
      assert.equal(informer.synced, true);
      assert.equal(informer.size, 250);
      assert.equal(pages(), 3, 'three pages of at most 100');
      assert.equal(events.filter((e) => e.type === 'add').length, 250);
      events.length = 0;
      await cluster.kubectlOk(['-n', NS, 'patch', 'configmap', 'cm-007', '--type=merge', '-p', '{"data":{"v":"seven"}}']);
      await cluster.kubectlOk(['-n', NS, 'delete', 'configmap', 'cm-008']);
      await cluster.kubectlOk(['-n', NS, 'create', 'configmap', 'cm-new', '--from-literal=v=new']);
      await waitUntil('three events', 10_000, () => (events.length >= 3 ? true : undefined));
      const update = events.find((e) => e.type === 'update');
      assert.ok(update && update.type === 'update');
      assert.equal(update.old.data?.v, '7');
      assert.equal(update.object.data?.v, 'seven');
      assert.deepEqual(
        events.map((e) => `${e.type} ${e.object.metadata?.name}`),
        ['update cm-007', 'delete cm-008', 'add cm-new'],
      );
      assert.equal(informer.get(`${NS}/cm-008`), undefined);
      assert.equal(informer.get(`${NS}/cm-new`)?.data?.v, 'new');
    } finally {
      informer.stop();
    }
  });

  test('watches end on their server-side timeout and resume where they stopped: no second list, nothing missed', async () => {
    const { informer, events } = configMaps({ minWatchTimeoutSeconds: 1 });
    await informer.start();
    try {
      const start = informer.watches;
      events.length = 0;
      // Changes keep coming while watch after watch times out.
      for (let i = 0; i < 30; i++) {
        await cluster.kubectlOk([
          '-n',
          NS,
          'patch',
          'configmap',
          `cm-${String(100 + i).padStart(3, '0')}`,
          '--type=merge',
          '-p',
          `{"data":{"round":"${i}"}}`,
        ]);
        await sleep(200);
      }
      await waitUntil('every change seen', 10_000, () => (events.length >= 30 ? true : undefined));
      assert.ok(informer.watches - start >= 3, `watches: ${informer.watches - start}, want several (each lasts 1-2 s)`);
      assert.equal(informer.lists, 1, 'a watch that times out resumes from its resourceVersion without listing again');
      assert.equal(informer.restarts, 0);
      const api = await core.listNamespacedConfigMap({ namespace: NS });
      for (const cm of api.items)
        assert.deepEqual(
          informer.get(`${NS}/${cm.metadata?.name}`)?.data,
          cm.data,
          `cm ${cm.metadata?.name} as the API server has it`,
        );
      assert.equal(informer.size, api.items.length);
    } finally {
      informer.stop();
    }
  });

  test('bookmarks carry the resourceVersion on while nothing it watches changes', async () => {
    const { informer, events } = configMaps({ minWatchTimeoutSeconds: 3 });
    await informer.start();
    try {
      const from = BigInt(informer.version);
      events.length = 0;
      // Other objects change (the resourceVersion of the whole store moves); none of ours does.
      for (let i = 0; i < 40; i++) {
        await cluster.kubectlOk(['-n', OTHER, 'create', 'configmap', `other-${i}`]);
        await sleep(200);
      }
      await waitUntil('a bookmark', 20_000, () => (informer.bookmarks > 0 ? true : undefined));
      assert.equal(events.length, 0, 'no event: nothing watched changed');
      assert.ok(BigInt(informer.version) > from, `the resourceVersion moved on from ${from} to ${informer.version}`);
      assert.equal(informer.lists, 1);
    } finally {
      informer.stop();
    }
  });

  test('a write refused with 409 Conflict (a plan made from a stale read) is retried quietly until it lands', async () => {
    // A Keyed policy whose Secret (one the operator made) holds an 8-byte key: the plan regenerates it.
    const policy = {
      apiVersion: 'netoken.io/v1alpha1',
      kind: 'TokenPolicy',
      metadata: { name: 'regen' },
      spec: {
        nodeSelector: {},
        interfaces: { names: [], patterns: [] },
        token: { mode: 'Keyed', epochSeconds: 60, secretRef: { name: 'regen-key' }, bind: [] },
        option: { kind: 253, experimentId: 0x4e54 },
        egress: { destinations: [] },
      },
    } as unknown as TokenPolicy;
    await cluster.apply(
      `apiVersion: v1\nkind: Secret\nmetadata: {name: regen-key, namespace: ${NS}, labels: {app.kubernetes.io/managed-by: netoken-operator}}\ntype: Opaque\ndata: {current: ${Buffer.alloc(8, 1).toString('base64')}}\n`,
    );
    const stale = await core.readNamespacedSecret({ name: 'regen-key', namespace: NS });
    // Someone else writes the Secret after it was read: the plan's resourceVersion is stale now.
    await cluster.kubectlOk(['-n', NS, 'label', 'secret', 'regen-key', 'touched=yes']);
    let reads = 0;
    const outcomes: string[] = [];
    const warnings: string[] = [];
    const log = silentLogger();
    log.warn = ((m: string) => warnings.push(m)) as unknown as typeof log.warn;
    const queue = new KeyedQueue<string>({
      log,
      isConflict,
      reconcile: async () => {
        // The first attempt acts on the stale read, as a lagging cache would; the next reads afresh.
        const secret = reads++ === 0 ? stale : await core.readNamespacedSecret({ name: 'regen-key', namespace: NS });
        const plan = planSecret({ policy, namespace: NS, secret, now: Date.now() });
        assert.equal(plan.action, 'regenerate', 'the key does not fit the mode');
        await applySecretPlan(new SecretsApi(kc), NS, 'regen-key', plan);
      },
      onDone: (_k, _s, outcome) => outcomes.push(outcome),
    });
    queue.resume();
    queue.enqueue('regen-key');
    await waitUntil('the write lands', 10_000, async () => (outcomes.includes('success') ? true : undefined));
    await queue.close();
    assert.deepEqual(outcomes, ['conflict', 'success'], 'the stale write got 409 and went again at once');
    assert.deepEqual(warnings, [], 'a conflict is no failure: nothing is logged as one');
    const written = await core.readNamespacedSecret({ name: 'regen-key', namespace: NS });
    assert.equal(Buffer.from(written.data?.current ?? '', 'base64').length, 16, 'regenerated once, for the Keyed mode');
    assert.equal(written.metadata?.labels?.touched, 'yes', "the other writer's change is kept");
  });
  test('the API client keeps its connection: a hundred calls open one, not a hundred', async () => {
    const port = new URL(cluster.server).port;
    /** This process's connections to the API server (open), and closed ones waiting out TIME_WAIT. */
    const sockets = async (): Promise<{ open: number; timeWait: number }> => {
      const open = (await run('ss', ['-Htnp', 'state', 'established', 'dport', `= :${port}`])).stdout
        .split('\n')
        .filter((l) => l.includes(`pid=${process.pid},`)).length;
      // Either end may close first and keep the TIME_WAIT: count both.
      const timeWait = (await run('ss', ['-Htn', 'state', 'time-wait', `( dport = :${port} or sport = :${port} )`])).stdout
        .split('\n')
        .filter((l) => l.trim()).length;
      return { open, timeWait };
    };
    const secrets = new SecretsApi(kc);
    const before = await sockets();
    for (let i = 0; i < 100; i++) await secrets.listNamespacedSecret({ namespace: NS, limit: 1 });
    const after = await sockets();
    assert.ok(after.open >= 1, `a connection stays open for the next call: ${JSON.stringify(after)}`);
    assert.ok(
      after.timeWait - before.timeWait <= 2,
      `calls reuse the connection instead of closing one each: TIME_WAIT ${before.timeWait} → ${after.timeWait}`,
    );
  });
});
