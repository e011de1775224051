/**
 * System tests of `netoken operator` against a real API server: the real CLI process, running
 * as the chart's ServiceAccount with exactly the chart's RBAC. Nodes and
 * TokenNodeStates are written by hand here (the agent's part), and the tests check what a user
 * sees: the key Secret, its rotation, the policy status and printer columns, the finalizer,
 * the clean-up of reports of deleted Nodes, and leader election with a killed leader.
 *
 * NETOKEN_CLI overrides the CLI entry point (it defaults to bin/netoken.js).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, createWriteStream } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { API, API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { installChartRbac, operatorKubeconfig } from './chart.js';
import { TestCluster, freePorts, repoRoot } from './cluster.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { daemonEnv } from '../../src/lib/memory.js';

const NS = 'netoken-system';
const cli = process.env.NETOKEN_CLI || join(repoRoot, 'bin/netoken.js');
const FINALIZER_TIMEOUT_S = 15;

interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

interface PolicyJson {
  metadata: { name: string; generation: number; resourceVersion?: string; finalizers?: string[]; deletionTimestamp?: string };
  status?: {
    observedGeneration?: number;
    conditions?: Cond[];
    nodes?: { selected: number; ready: number; failed: number; withoutAgent: number };
    failedNodes?: { node: string; reason: string; message?: string }[];
    nodesWithoutAgent?: { node: string; reason: string; message?: string }[];
  };
}

interface EventJson {
  type: string;
  reason: string;
  message: string;
  count?: number;
  involvedObject: { kind: string; name: string; uid?: string };
}

interface SecretJson {
  metadata: { name: string; resourceVersion: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  type: string;
  data?: Record<string, string>;
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 2000 }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (body += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) => res({ status: 0, body: e.message }));
    req.end();
  });
}

/** A running `netoken operator` with its output kept in memory and in a file. */
class OperatorProcess {
  output = '';
  readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly port: number,
    readonly logFile: string,
  ) {
    this.exited = new Promise((res) => {
      if (child.exitCode !== null || child.signalCode !== null) res();
      else child.once('exit', () => res());
    });
  }

  static async start(cluster: TestCluster, kubeconfig: string, name: string): Promise<OperatorProcess> {
    const port = (await freePorts(1))[0] as number;
    const args = [
      cli,
      'operator',
      `--kubeconfig=${kubeconfig}`,
      `--namespace=${NS}`,
      `--metrics-address=127.0.0.1:${port}`,
      `--finalizer-timeout=${FINALIZER_TIMEOUT_S}s`,
      '--key-retire-margin=1s',
      '--agent-grace=1s',
      '--log-format=json',
      '--log-level=debug',
    ];
    // Own process group, listed for the cluster's watchdog: if this test process is killed, the
    // operator goes with the API server instead of retrying against nothing for ever.
    const child = spawn(process.execPath, args, {
      cwd: repoRoot,
      env: daemonEnv({ ...process.env, POD_NAME: name, KUBECONFIG: '' }),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    if (child.pid !== undefined) appendFileSync(join(cluster.dir, 'pgids'), `${child.pid}\n`);
    const logFile = join(cluster.dir, `${name}.log`);
    const p = new OperatorProcess(name, child, port, logFile);
    const file = createWriteStream(logFile);
    for (const s of [child.stdout, child.stderr]) {
      s?.setEncoding('utf8');
      s?.on('data', (d: string) => {
        p.output += d;
        file.write(d);
      });
    }
    void p.exited.then(() => file.end());
    return p;
  }

  tail(n = 25): string {
    return this.output.trimEnd().split('\n').slice(-n).join('\n');
  }

  get(path: string): Promise<{ status: number; body: string }> {
    return httpGet(this.port, path);
  }

  /** The value of a metric line (name with labels, exactly as printed), or undefined. */
  async metric(series: string): Promise<number | undefined> {
    const { body } = await this.get('/metrics');
    for (const line of body.split('\n')) {
      if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
    }
    return undefined;
  }

  kill(sig: NodeJS.Signals): void {
    if (this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid, sig);
    } catch {
      // already gone
    }
  }

  async stop(): Promise<void> {
    this.kill('SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), sleep(15_000).then(() => false)]);
    if (!done) {
      this.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** Polls `check` until it returns a value (not undefined) or throws no more; fails after `ms` with the last reason. */
async function eventually<T>(what: string, ms: number, check: () => Promise<T | undefined>, logs?: () => string): Promise<T> {
  let last = 'no attempt';
  const probe = async (): Promise<T | undefined> => {
    try {
      const v = await check();
      if (v === undefined) last = 'not yet';
      return v;
    } catch (err) {
      last = (err as Error).message;
      return undefined;
    }
  };
  return waitUntil(what, ms, probe, { everyMs: 250, context: () => `last: ${last}${logs ? `\noperator log:\n${logs()}` : ''}` });
}

function cond(p: PolicyJson | undefined, type: string): Cond | undefined {
  return p?.status?.conditions?.find((c) => c.type === type);
}

function policyYaml(name: string, token: string, selector = '{}'): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  nodeSelector: ${selector}
  token: ${token}
  egress: {}
`;
}

describe('netoken operator on a real API server', () => {
  let cluster: TestCluster;
  let custom: CustomObjectsApi;
  let saKubeconfig: string;
  let opA: OperatorProcess;
  let opB: OperatorProcess | undefined;
  let opC: OperatorProcess | undefined;
  /** the fencing test's operators (they run under other identities, one of them cut off on purpose) */
  let fenced: OperatorProcess | undefined;
  let standby: OperatorProcess | undefined;
  const all = (): OperatorProcess[] => [opA, opB, opC].filter((p): p is OperatorProcess => p !== undefined);
  const logs = (): string =>
    all()
      .map((p) => `--- ${p.name} ---\n${p.tail()}`)
      .join('\n');

  const getPolicy = async (name: string): Promise<PolicyJson | undefined> => {
    const r = await cluster.kubectl(['get', 'tokenpolicy', name, '-o', 'json']);
    if (r.code !== 0) {
      if (/NotFound/.test(r.stderr)) return undefined;
      throw new Error(r.stderr);
    }
    return JSON.parse(r.stdout) as PolicyJson;
  };
  const getSecret = async (name: string): Promise<SecretJson | undefined> => {
    const r = await cluster.kubectl(['get', 'secret', '-n', NS, name, '-o', 'json']);
    if (r.code !== 0) {
      if (/NotFound/.test(r.stderr)) return undefined;
      throw new Error(r.stderr);
    }
    return JSON.parse(r.stdout) as SecretJson;
  };
  const leaseHolder = async (): Promise<string | undefined> => {
    const r = await cluster.kubectl(['get', 'lease', '-n', NS, 'netoken-operator', '-o', 'jsonpath={.spec.holderIdentity}']);
    return r.code === 0 ? r.stdout.trim() : undefined;
  };
  /** Writes a hand-made TokenNodeState for `node` listing `policies` (as the agent would). */
  /**
   * A node's report, as its agent writes it: the object if missing, then its status. From this
   * process, in milliseconds: two kubectl runs can take seconds on a busy machine, longer than
   * the operator holds a new policy's first NodesPending status.
   */
  const writeNodeState = async (node: string, policies: unknown[]): Promise<void> => {
    const where = { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates' };
    try {
      await custom.createClusterCustomObject({
        ...where,
        body: { apiVersion: API, kind: 'TokenNodeState', metadata: { name: node } },
      });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) throw err;
    }
    const status = { status: { agent: { version: '0.1.0', kernelRelease: '6.18.0', tcx: true }, policies } };
    await custom.patchClusterCustomObjectStatus(
      { ...where, name: node, body: status },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  };
  const applied = (name: string, generation: number, errors: { reason: string; message: string }[] = []): unknown => ({
    name,
    generation,
    interfaces: ['eth0'],
    counters: { marked: 3 },
    ...(errors.length ? { errors } : {}),
  });

  /** The Events in the default namespace that match a field selector. */
  const eventsOf = (fieldSelector: string): Promise<{ items: EventJson[] }> =>
    cluster.getJson<{ items: EventJson[] }>(['events', '-n', 'default', '--field-selector', fieldSelector]);
  /** Waits until `get` returns a value (not undefined) that satisfies `ok`, and returns it. */
  const waitFor = <T>(what: string, get: () => Promise<T | undefined>, ok: (v: T) => unknown, ms: number): Promise<T> =>
    eventually(
      what,
      ms,
      async () => {
        const v = await get();
        return v !== undefined && ok(v) ? v : undefined;
      },
      logs,
    );
  /** Waits until Secret `name` exists and satisfies `ok`, and returns it. */
  const secretWhere = (what: string, name: string, ok: (s: SecretJson) => unknown, ms = 20_000): Promise<SecretJson> =>
    waitFor(what, () => getSecret(name), ok, ms);
  /** Waits until TokenPolicy `name` exists and satisfies `ok`, and returns it. */
  const policyWhere = (what: string, name: string, ok: (p: PolicyJson) => unknown, ms = 20_000): Promise<PolicyJson> =>
    waitFor(what, () => getPolicy(name), ok, ms);
  /** Waits until TokenPolicy `policy` has a `type` condition that satisfies `ok`, and returns the condition. */
  const conditionWhere = (what: string, policy: string, type: string, ok: (c: Cond) => unknown, ms = 20_000): Promise<Cond> =>
    waitFor(what, async () => cond(await getPolicy(policy), type), ok, ms);

  before(async () => {
    cluster = await TestCluster.start({ audit: true });
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    await cluster.kubectlOk(['create', 'namespace', NS]);
    await installChartRbac(cluster, NS);
    await cluster.apply(
      ['n1:edge', 'n2:edge', 'n3:db']
        .map((s) => {
          const [name, role] = s.split(':');
          return `apiVersion: v1\nkind: Node\nmetadata: {name: ${name}, labels: {role: ${role}}}\n`;
        })
        .join('---\n'),
    );
    saKubeconfig = await operatorKubeconfig(cluster, NS);
    opA = await OperatorProcess.start(cluster, saKubeconfig, 'op-a');
    await eventually(
      'op-a ready and leading',
      30_000,
      async () => {
        const r = await opA.get('/readyz');
        return r.status === 200 && /leader/.test(r.body) && (await leaseHolder()) === 'op-a' ? true : undefined;
      },
      logs,
    );
  });

  after(async () => {
    for (const p of [...all(), fenced, standby]) await p?.stop();
    await cluster?.stop();
  });

  test('serves /healthz, /readyz and /metrics, and holds the Lease', async () => {
    const h = await opA.get('/healthz');
    assert.equal(h.status, 200, `/healthz: ${h.body}`);
    const r = await opA.get('/readyz');
    assert.equal(r.status, 200, `/readyz: ${r.body}`);
    assert.match(r.body, /caches synced; leader/);
    const m = await opA.get('/metrics');
    for (const want of [
      'netoken_reconcile_duration_seconds',
      'netoken_reconcile_errors_total{kind="policy"}',
      'netoken_watch_restarts_total{resource="nodes"}',
      'netoken_operator_leader 1',
    ]) {
      assert.ok(m.body.includes(want), `/metrics lacks ${want}`);
    }
    assert.equal(await leaseHolder(), 'op-a');
    assert.equal((await opA.get('/nope')).status, 404);
  });

  test('generates a missing key Secret: 8 random bytes for Static, 16 for Keyed; adds the finalizer', async () => {
    await cluster.apply(policyYaml('gen-static', '{secretRef: {name: gen-static-key}}'));
    await cluster.apply(policyYaml('gen-keyed', '{mode: Keyed, epochSeconds: 60, secretRef: {name: gen-keyed-key}}'));
    for (const [secret, len] of [
      ['gen-static-key', 8],
      ['gen-keyed-key', 16],
    ] as const) {
      const s = await eventually(`Secret ${secret} generated`, 20_000, () => getSecret(secret), logs);
      const key = Buffer.from(s.data?.current ?? '', 'base64');
      assert.equal(key.length, len, `${secret} current: got ${key.length} bytes, want ${len}`);
      assert.notDeepEqual(key, Buffer.alloc(len), 'the key is not all zero');
      assert.equal(s.type, 'Opaque');
      assert.equal(s.data?.previous, undefined, 'no previous key before a rotation');
      assert.equal(s.metadata.labels?.['app.kubernetes.io/managed-by'], 'netoken-operator');
      assert.match(s.metadata.annotations?.['netoken.io/rotated-at'] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    }
    const p = await policyWhere(
      'finalizer on gen-static',
      'gen-static',
      (got) => got.metadata.finalizers?.includes('netoken.io/cleanup'),
      10_000,
    );
    assert.deepEqual(p.metadata.finalizers, ['netoken.io/cleanup']);
    const ok = await opA.metric('netoken_reconcile_duration_seconds_count{kind="policy",result="success"}');
    assert.ok((ok ?? 0) > 0, `reconciles counted in /metrics: got ${ok}`);
  });

  test("a user's Secret with a wrong-length key: Degraded SecretInvalid, the Secret untouched; fixed: Degraded clears", async () => {
    const short = Buffer.from('12345').toString('base64');
    await cluster.apply(
      `apiVersion: v1\nkind: Secret\nmetadata: {name: user-key, namespace: ${NS}}\ntype: Opaque\ndata: {current: ${short}}\n`,
    );
    const before = await getSecret('user-key');
    await cluster.apply(policyYaml('user-pol', '{secretRef: {name: user-key}}', '{matchLabels: {role: edge}}'));
    const p = await policyWhere('Degraded SecretInvalid', 'user-pol', (got) => cond(got, 'Degraded')?.reason === 'SecretInvalid');
    const degraded = cond(p, 'Degraded');
    assert.equal(degraded?.status, 'True');
    assert.match(degraded?.message ?? '', /Secret "user-key".*current holds 5 bytes; a Static token needs exactly 8/);
    assert.ok(!JSON.stringify(p.status).includes(short), 'status does not show the key');
    assert.equal(cond(p, 'Ready')?.status, 'False');
    assert.equal(cond(p, 'Ready')?.reason, 'SecretInvalid');
    await sleep(1000);
    assert.equal(
      (await getSecret('user-key'))?.metadata.resourceVersion,
      before?.metadata.resourceVersion,
      "the operator did not write the user's Secret",
    );

    const good = Buffer.from('8bytes!!').toString('base64');
    await cluster.apply(
      `apiVersion: v1\nkind: Secret\nmetadata: {name: user-key, namespace: ${NS}}\ntype: Opaque\ndata: {current: ${good}}\n`,
    );
    const fixed = await policyWhere('Degraded cleared', 'user-pol', (got) => cond(got, 'Degraded')?.status === 'False');
    assert.equal(cond(fixed, 'Ready')?.reason, 'NoAgentOnSelectedNodes', 'no agent has reported from n1 or n2 yet');
    const s = await getSecret('user-key');
    assert.deepEqual(s?.data, { current: good }, "the user's key is kept as written (no rotation asked for)");
    assert.equal(s?.metadata.labels?.['app.kubernetes.io/managed-by'], undefined);
  });

  test('switching a policy between Static and Keyed regenerates the key the operator made', async () => {
    const before = await eventually('gen-keyed-key exists', 10_000, () => getSecret('gen-keyed-key'), logs);
    assert.equal(Buffer.from(before.data?.current ?? '', 'base64').length, 16);
    await cluster.apply(policyYaml('gen-keyed', '{mode: Static, secretRef: {name: gen-keyed-key}}'));
    const after = await secretWhere(
      'gen-keyed-key regenerated with 8 bytes',
      'gen-keyed-key',
      (s) => Buffer.from(s.data?.current ?? '', 'base64').length === 8,
    );
    assert.equal(after.data?.previous, undefined, 'a 16-byte previous key would be useless to a Static verifier');
  });

  test('what the CRD schema cannot check is reported: two token modes sharing one Secret', async () => {
    // gen-static's Secret holds an 8-byte key; a Keyed policy cannot share it.
    await cluster.apply(policyYaml('shares-key', '{mode: Keyed, epochSeconds: 60, secretRef: {name: gen-static-key}}'));
    const shared = await policyWhere(
      'shares-key SecretConflict',
      'shares-key',
      (got) => cond(got, 'Degraded')?.reason === 'SecretConflict',
    );
    assert.match(
      cond(shared, 'Degraded')?.message ?? '',
      /Secret "gen-static-key" is also the key of TokenPolicy "gen-static", whose token mode is Static/,
    );
    assert.equal(
      Buffer.from((await getSecret('gen-static-key'))?.data?.current ?? '', 'base64').length,
      8,
      'the shared Secret is left as it was',
    );
    assert.equal(cond(shared, 'Ready')?.status, 'False');
    // The other policy's status comes from its own reconcile, which may end after shares-key's.
    await policyWhere('the other policy says so too', 'gen-static', (got) => cond(got, 'Degraded')?.reason === 'SecretConflict');
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'shares-key', '--wait=false']);
    await policyWhere('gen-static no longer in conflict', 'gen-static', (got) => cond(got, 'Degraded')?.status === 'False');
  });

  test('Events say what the operator did and found; a generated key is named in the Ready message', async () => {
    const ev = await eventually(
      'KeyGenerated and SecretConflict Events on gen-static',
      15_000,
      async () => {
        const list = await eventsOf('involvedObject.name=gen-static');
        const reasons = list.items.map((e) => e.reason);
        return reasons.includes('KeyGenerated') && reasons.includes('SecretConflict') ? list.items : undefined;
      },
      logs,
    );
    const generated = ev.find((e) => e.reason === 'KeyGenerated');
    assert.equal(generated?.type, 'Normal');
    assert.equal(generated?.involvedObject.kind, 'TokenPolicy');
    assert.match(
      generated?.message ?? '',
      new RegExp(`Secret ${NS}/gen-static-key named by spec.token.secretRef did not exist: generated a random 8-byte Static key`),
    );
    const conflict = ev.find((e) => e.reason === 'SecretConflict');
    assert.equal(conflict?.type, 'Warning');
    assert.match(conflict?.message ?? '', /Secret "gen-static-key" is also the key of TokenPolicy "shares-key"/);
    const described = await cluster.kubectlOk(['describe', 'tokenpolicy', 'gen-static']);
    assert.match(
      described,
      /Events:[\s\S]*KeyGenerated[\s\S]*SecretConflict/,
      `kubectl describe shows the Events:\n${described}`,
    );
    const ready = cond(await getPolicy('gen-static'), 'Ready');
    assert.match(
      ready?.message ?? '',
      new RegExp(
        `the key is one the operator generated \\(Secret ${NS}/gen-static-key did not exist when the policy first named it\\)`,
      ),
    );
    assert.doesNotMatch(
      cond(await getPolicy('user-pol'), 'Ready')?.message ?? '',
      /operator generated/,
      "a user's own Secret is not called generated",
    );
  });

  test('rotation in steps: publish next, switch once every node accepts it, retire once every node signs with it; Events and the KeyRotation condition', async () => {
    const keys = (signs: number, accepts: number[]): unknown => ({ ...(applied('rot', 1) as object), keys: { signs, accepts } });
    await writeNodeState('n3', [keys(1, [1])]);
    await cluster.apply(
      policyYaml('rot', '{mode: Static, secretRef: {name: rot-key}, rotation: {period: 3m}}', '{matchLabels: {role: db}}'),
    );
    const first = await eventually('Secret rot-key generated', 20_000, () => getSecret('rot-key'), logs);
    const k1 = first.data?.current ?? '';
    assert.equal(first.metadata.annotations?.['netoken.io/key-generation'], '1');
    // A key made an hour ago is overdue for a 3m period: the new key is published, not switched to.
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z');
    await cluster.kubectlOk(['annotate', 'secret', '-n', NS, 'rot-key', `netoken.io/rotated-at=${hourAgo}`, '--overwrite']);
    const published = await secretWhere('generation 2 published', 'rot-key', (s) => s.data?.next);
    assert.equal(published.data?.current, k1, 'markers keep the old key while node n3 has not accepted the new one');
    const k2 = published.data?.next ?? '';
    assert.equal(Buffer.from(k2, 'base64').length, 8);
    await sleep(2000);
    assert.equal((await getSecret('rot-key'))?.data?.current, k1, 'still waiting for n3');
    const waiting = await conditionWhere('KeyRotation Publishing', 'rot', 'KeyRotation', (c) => c.reason === 'Publishing');
    assert.equal(waiting.status, 'True');
    assert.equal(waiting.message, 'key generation 2 published: 0 of 1 nodes accept it; waiting for n3');

    // n3 accepts 2: markers switch.
    await writeNodeState('n3', [keys(1, [1, 2])]);
    const switched = await secretWhere('markers switched to generation 2', 'rot-key', (s) => s.data?.current === k2);
    assert.equal(switched.data?.previous, k1, 'the old key stays accepted as previous');
    assert.equal(switched.data?.next, undefined);
    assert.equal(switched.metadata.annotations?.['netoken.io/key-generation'], '2');
    // n3 signs with 2: a Static key is retired after the margin (1 s here).
    await writeNodeState('n3', [keys(2, [1, 2])]);
    const retired = await secretWhere(
      'generation 1 retired',
      'rot-key',
      (s) => s.data?.previous === undefined && s.data?.current === k2,
    );
    assert.deepEqual(Object.keys(retired.data ?? {}), ['current']);
    await sleep(2000);
    assert.equal((await getSecret('rot-key'))?.data?.current, k2, 'rotated once, not again');
    assert.equal(await opA.metric('netoken_key_rotations_total'), 1);
    const idle = await conditionWhere('KeyRotation Idle', 'rot', 'KeyRotation', (c) => c.reason === 'Idle');
    assert.equal(idle.message, 'no rotation under way; markers sign with key generation 2');
    const ev = await cluster.kubectl([
      'get',
      'events',
      '-A',
      '--field-selector',
      'involvedObject.kind=TokenPolicy,involvedObject.name=rot',
      '-o',
      'json',
    ]);
    const reasons = (JSON.parse(ev.stdout) as { items: { reason: string }[] }).items.map((e) => e.reason);
    assert.deepEqual(
      ['KeyGenerated', 'RotationStarted', 'KeySwitched', 'KeyRetired'].filter((r) => !reasons.includes(r)),
      [],
      `Events: ${reasons.join(', ')}`,
    );
    const described = await cluster.kubectlOk(['describe', 'tokenpolicy', 'rot']);
    assert.match(described, /KeySwitched/, 'kubectl describe shows the Events');

    // n3 stops reporting the policy; the policy goes.
    await writeNodeState('n3', []);
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'rot']);
  });

  test('status rolls up the nodes: one failing → Ready False / Degraded True naming it; fixed → Ready True', async () => {
    await cluster.apply(policyYaml('web', '{secretRef: {name: web-key}}', '{matchLabels: {role: edge}}'));
    const noAgent = await policyWhere(
      'web NoAgentOnSelectedNodes',
      'web',
      (got) => cond(got, 'Ready')?.reason === 'NoAgentOnSelectedNodes',
    );
    assert.deepEqual(
      noAgent.status?.nodes,
      { selected: 0, ready: 0, failed: 0, withoutAgent: 2 },
      'n1 and n2 match (n3, role=db, does not), and run no agent yet',
    );
    assert.deepEqual(
      noAgent.status?.nodesWithoutAgent?.map((n) => [n.node, n.reason]),
      [
        ['n1', 'NoAgent'],
        ['n2', 'NoAgent'],
      ],
    );
    const gen = noAgent.metadata.generation;

    await writeNodeState('n1', [applied('web', gen)]);
    await writeNodeState('n2', [
      applied('web', gen, [{ reason: 'InterfaceNotFound', message: 'eth0: no such interface on n2' }]),
    ]);
    const failing = await policyWhere(
      'web NodesFailing',
      'web',
      (got) => cond(got, 'Ready')?.reason === 'NodesFailing' && got.status?.nodes?.ready === 1,
    );
    assert.deepEqual(failing.status?.nodes, { selected: 2, ready: 1, failed: 1, withoutAgent: 0 });
    assert.equal(cond(failing, 'Ready')?.status, 'False');
    assert.equal(cond(failing, 'Degraded')?.status, 'True');
    assert.equal(cond(failing, 'Degraded')?.reason, 'NodesFailing');
    assert.match(cond(failing, 'Degraded')?.message ?? '', /n2 \(InterfaceNotFound\)/);
    assert.deepEqual(failing.status?.failedNodes, [
      { node: 'n2', reason: 'InterfaceNotFound', message: 'eth0: no such interface on n2' },
    ]);
    assert.equal(failing.status?.observedGeneration, gen);
    assert.equal(cond(failing, 'Ready')?.observedGeneration, gen);

    await writeNodeState('n2', [applied('web', gen)]);
    const ready = await policyWhere('web Ready', 'web', (got) => cond(got, 'Ready')?.status === 'True');
    assert.equal(cond(ready, 'Ready')?.reason, 'AllNodesReady');
    assert.equal(cond(ready, 'Degraded')?.status, 'False');
    assert.deepEqual(ready.status?.nodes, { selected: 2, ready: 2, failed: 0, withoutAgent: 0 });
    assert.deepEqual(ready.status?.failedNodes, []);
    const table = await cluster.kubectlOk(['get', 'tokenpolicy', 'web']);
    assert.match(
      table,
      /web\s+Static\s+True\s+AllNodesReady\s+2\s+2\s/,
      `kubectl get shows Ready True, its reason, 2 of 2 nodes:\n${table}`,
    );

    await cluster.apply(policyYaml('nowhere', '{secretRef: {name: web-key}}', '{matchLabels: {role: none}}'));
    const none = await policyWhere(
      'nowhere NoNodesSelected',
      'nowhere',
      (got) => cond(got, 'Ready')?.reason === 'NoNodesSelected',
    );
    assert.deepEqual(none.status?.nodes, { selected: 0, ready: 0, failed: 0, withoutAgent: 0 });
  });

  test('a matching node without an agent (a Windows node) never holds Ready back: counted apart, with a reason', async () => {
    await cluster.apply('apiVersion: v1\nkind: Node\nmetadata: {name: win-1, labels: {role: edge, kubernetes.io/os: windows}}\n');
    const p = await policyWhere(
      'web counts win-1 as without an agent',
      'web',
      (got) => got.status?.nodes?.withoutAgent === 1,
      15_000,
    );
    assert.equal(cond(p, 'Ready')?.status, 'True');
    assert.equal(cond(p, 'Ready')?.reason, 'AllNodesReady');
    assert.deepEqual(p.status?.nodes, { selected: 2, ready: 2, failed: 0, withoutAgent: 1 });
    assert.deepEqual(
      p.status?.nodesWithoutAgent?.map((n) => [n.node, n.reason]),
      [['win-1', 'NotLinux']],
    );
    assert.match(cond(p, 'Ready')?.message ?? '', /1 more matching node runs no netoken agent and is left out: win-1/);
    const wide = await cluster.kubectlOk(['get', 'tokenpolicy', 'web', '-o', 'wide']);
    assert.match(wide, /web\s+Static\s+True\s+AllNodesReady\s+2\s+2\s+1\s/, `kubectl get -o wide:\n${wide}`);
    await cluster.kubectlOk(['delete', 'node', 'win-1']);
    await eventually(
      'win-1 gone from web',
      15_000,
      async () => ((await getPolicy('web'))?.status?.nodes?.withoutAgent === 0 ? true : undefined),
      logs,
    );
  });

  test('a quiet cluster writes nothing: counters moving in node reports cost no status write and no reconcile', async () => {
    const before = await getPolicy('web');
    assert.equal(cond(before, 'Ready')?.status, 'True');
    const runs = async (): Promise<number> =>
      (await opA.metric('netoken_reconcile_duration_seconds_count{kind="policy",result="success"}')) ?? 0;
    await sleep(1500);
    const runsBefore = await runs();
    const writesBefore = cluster
      .auditEvents()
      .filter((e) => e.objectRef?.resource === 'tokenpolicies' && e.user.username.endsWith(':netoken-operator')).length;
    const gen = before?.metadata.generation ?? 1;
    for (let i = 1; i <= 5; i++) {
      // What an agent writes when only its counters moved.
      const status = {
        status: {
          agent: { version: '0.1.0', kernelRelease: '6.18.0', tcx: true },
          countersUpdatedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
          policies: [{ name: 'web', generation: gen, interfaces: ['eth0'], counters: { marked: 3 + i } }],
        },
      };
      await cluster.kubectlOk([
        'patch',
        'tokennodestate',
        'n1',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify(status),
      ]);
      await sleep(500);
    }
    await sleep(1500);
    const after = await getPolicy('web');
    assert.equal(after?.metadata.resourceVersion, before?.metadata.resourceVersion, 'the policy was not written');
    assert.equal(await runs(), runsBefore, 'nothing was reconciled');
    const writesAfter = cluster
      .auditEvents()
      .filter((e) => e.objectRef?.resource === 'tokenpolicies' && e.user.username.endsWith(':netoken-operator')).length;
    assert.equal(writesAfter, writesBefore, 'the audit log shows no write of the operator to any policy');
  });

  test('a new policy its nodes apply at once costs the operator two writes: the finalizer, then a first status that is Ready', async () => {
    const webGen = (await getPolicy('web'))?.metadata.generation ?? 1;
    const mark = cluster.auditEvents().length;
    await cluster.apply(policyYaml('fast', '{secretRef: {name: web-key}}', '{matchLabels: {role: edge}}'));
    // Both edge nodes apply it at once, as their agents would.
    await Promise.all(['n1', 'n2'].map((n) => writeNodeState(n, [applied('web', webGen), applied('fast', 1)])));
    const ready = await policyWhere('fast Ready', 'fast', (got) => cond(got, 'Ready')?.status === 'True');
    assert.deepEqual(ready.status?.nodes, { selected: 2, ready: 2, failed: 0, withoutAgent: 0 });
    await sleep(1500);
    const writes = cluster
      .auditEvents()
      .slice(mark)
      .filter(
        (e) =>
          e.objectRef?.resource === 'tokenpolicies' &&
          e.objectRef.name === 'fast' &&
          e.user.username.endsWith(':netoken-operator'),
      )
      .map((e) => `${e.verb} ${e.objectRef?.subresource ?? ''} ${e.responseStatus?.code ?? ''}`.replace(/ +/g, ' '));
    assert.deepEqual(writes, ['patch 200', 'patch status 200'], 'no NodesPending status first, and no refused write');
    // The operator's writes are filed under its own name, not "unknown".
    const shown = JSON.parse(await cluster.kubectlOk(['get', 'tokenpolicy', 'fast', '-o', 'json', '--show-managed-fields'])) as {
      metadata: { managedFields?: { manager: string; subresource?: string }[] };
    };
    const managers = (shown.metadata.managedFields ?? []).map((f) => `${f.manager}${f.subresource ? ` ${f.subresource}` : ''}`);
    assert.deepEqual(managers.filter((m) => !m.startsWith('kubectl')).sort(), ['netoken-operator', 'netoken-operator status']);

    for (const n of ['n1', 'n2']) await writeNodeState(n, [applied('web', webGen)]);
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'fast', '--timeout=30s']);
  });

  test('a deleted policy is held while a node lists it, and goes once no node does', async () => {
    // web is listed by n1 and n2 (previous test).
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'web', '--wait=false']);
    const held = await policyWhere('web Terminating', 'web', (got) => cond(got, 'Ready')?.reason === 'Terminating', 10_000);
    assert.ok(held.metadata.deletionTimestamp, 'deletion has begun');
    assert.match(cond(held, 'Ready')?.message ?? '', /waiting for 2 node\(s\) to remove the policy: n1, n2/);
    const waiting = await eventually(
      'a WaitingForNodes Event',
      10_000,
      async () => {
        const list = await eventsOf('involvedObject.name=web,reason=WaitingForNodes');
        return list.items[0];
      },
      logs,
    );
    assert.match(waiting.message, /deletion waiting for 2 node\(s\) to remove the policy: n1, n2/);
    await sleep(3000);
    assert.ok(await getPolicy('web'), 'still there 3 s later: n1 and n2 list it');

    await writeNodeState('n1', []);
    await conditionWhere('web waiting for n2 only', 'web', 'Ready', (c) =>
      /waiting for 1 node\(s\) to remove the policy: n2/.test(c.message ?? ''),
    );
    await writeNodeState('n2', []);
    await eventually('web gone', 10_000, async () => ((await getPolicy('web')) === undefined ? true : undefined), logs);
  });

  test('kubectl wait --for=condition=Ready after an edit waits for the new generation, never the previous one', async () => {
    await cluster.apply(policyYaml('waiter', '{secretRef: {name: waiter-key}}', '{matchLabels: {role: db}}'));
    const g1 = await eventually(
      'waiter has a generation',
      10_000,
      async () => (await getPolicy('waiter'))?.metadata.generation,
      logs,
    );
    await writeNodeState('n3', [applied('waiter', g1)]);
    await policyWhere('waiter Ready at its first generation', 'waiter', (got) => cond(got, 'Ready')?.status === 'True');
    // An edit: the status still says Ready True, for generation g1.
    await cluster.apply(
      policyYaml('waiter', '{secretRef: {name: waiter-key}}', '{matchLabels: {role: db}}').replace(
        'egress: {}',
        'egress: {destinations: [{cidr: 192.0.2.0/24}]}',
      ),
    );
    const g2 = (await getPolicy('waiter'))?.metadata.generation ?? 0;
    assert.equal(g2, g1 + 1);
    let done = false;
    const wait = cluster
      .kubectl(['wait', '--for=condition=Ready', 'tokenpolicy/waiter', '--timeout=60s'], { timeoutMs: 70_000 })
      .then((r) => {
        done = true;
        return r;
      });
    await sleep(4000);
    assert.equal(done, false, 'kubectl wait does not take the Ready of the previous generation');
    await writeNodeState('n3', [applied('waiter', g2)]);
    const r = await wait;
    assert.equal(r.code, 0, `kubectl wait: ${r.stderr}`);
    const p = await getPolicy('waiter');
    assert.equal(p?.status?.observedGeneration, g2);
    assert.equal(cond(p, 'Ready')?.observedGeneration, g2, 'Ready was met for the new generation');
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'waiter', '--wait=false']);
    await writeNodeState('n3', []);
  });

  test(`a node that stopped reporting holds a deleted policy only for --finalizer-timeout (${FINALIZER_TIMEOUT_S}s)`, async () => {
    await cluster.apply(policyYaml('stale', '{secretRef: {name: stale-key}}', '{matchLabels: {role: db}}'));
    const p = await policyWhere('stale has the finalizer', 'stale', (got) =>
      got.metadata.finalizers?.includes('netoken.io/cleanup'),
    );
    await writeNodeState('n3', [applied('stale', p.metadata.generation)]);
    await sleep(1500); // n3's last write is now clearly before the deletion
    const t0 = Date.now();
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'stale', '--wait=false']);
    await sleep(5000);
    assert.ok(await getPolicy('stale'), 'held 5 s after the deletion');
    await eventually(
      'stale gone after the timeout',
      (FINALIZER_TIMEOUT_S + 10) * 1000,
      async () => ((await getPolicy('stale')) === undefined ? true : undefined),
      logs,
    );
    const took = (Date.now() - t0) / 1000;
    assert.ok(took >= FINALIZER_TIMEOUT_S - 1, `released after ${took.toFixed(1)} s, not before the timeout`);
    assert.match(opA.output, /"policy":"stale"/, 'log lines carry the policy');
  });

  test('the TokenNodeState of a deleted Node is removed', async () => {
    await cluster.apply('apiVersion: v1\nkind: Node\nmetadata: {name: n4, labels: {role: edge}}\n');
    await writeNodeState('n4', []);
    // No status: the operator may delete it before a status write could land.
    await cluster.apply('apiVersion: netoken.io/v1alpha1\nkind: TokenNodeState\nmetadata: {name: ghost}\n');
    await eventually(
      'ghost (no Node at all) removed',
      15_000,
      async () => {
        const r = await cluster.kubectl(['get', 'tokennodestate', 'ghost']);
        return /NotFound/.test(r.stderr) ? true : undefined;
      },
      logs,
    );
    await sleep(1000);
    assert.equal((await cluster.kubectl(['get', 'tokennodestate', 'n4'])).code, 0, 'n4 is kept while its Node exists');
    await cluster.kubectlOk(['delete', 'node', 'n4']);
    await eventually(
      'n4 removed with its Node',
      15_000,
      async () => {
        const r = await cluster.kubectl(['get', 'tokennodestate', 'n4']);
        return /NotFound/.test(r.stderr) ? true : undefined;
      },
      logs,
    );
    assert.equal((await cluster.kubectl(['get', 'tokennodestate', 'n1'])).code, 0, "other nodes' reports stay");
  });

  test('leader election: a second operator stands by; kill -9 the leader and it takes over and reconciles', async () => {
    opB = await OperatorProcess.start(cluster, saKubeconfig, 'op-b');
    await eventually(
      'op-b ready as a standby',
      30_000,
      async () => {
        const r = await opB?.get('/readyz');
        return r?.status === 200 && /standby/.test(r.body) ? true : undefined;
      },
      logs,
    );
    assert.equal(await leaseHolder(), 'op-a', 'op-a keeps the Lease');
    await cluster.apply(policyYaml('while-a', '{secretRef: {name: while-a-key}}'));
    await eventually('op-a makes while-a-key', 15_000, () => getSecret('while-a-key'), logs);
    await sleep(1000);
    assert.equal(await opB.metric('netoken_operator_leader'), 0);
    const bRuns = await opB.metric('netoken_reconcile_duration_seconds_count{kind="policy",result="success"}');
    assert.equal(bRuns ?? 0, 0, 'the standby reconciled nothing');

    const killedAt = Date.now();
    opA.kill('SIGKILL');
    await opA.exited;
    await eventually('op-b holds the Lease', 30_000, async () => ((await leaseHolder()) === 'op-b' ? true : undefined), logs);
    const took = (Date.now() - killedAt) / 1000;
    assert.ok(took <= 22, `takeover took ${took.toFixed(1)} s, want about 15-19 s (lease 15 s + retry 2 s)`);
    await cluster.apply(policyYaml('after-takeover', '{secretRef: {name: after-takeover-key}}'));
    const s = await eventually('op-b makes after-takeover-key', 15_000, () => getSecret('after-takeover-key'), logs);
    assert.equal(Buffer.from(s.data?.current ?? '', 'base64').length, 8);
    assert.equal(await opB.metric('netoken_operator_leader'), 1);
    assert.match(opB.output, /acquired the leader Lease/);
  });

  test('SIGTERM hands the Lease to a standby at once; a leader that sees the Lease taken exits', async () => {
    assert.ok(opB, 'op-b leads (previous test)');
    opC = await OperatorProcess.start(cluster, saKubeconfig, 'op-c');
    await eventually(
      'op-c ready as a standby',
      30_000,
      async () => {
        const r = await opC?.get('/readyz');
        return r?.status === 200 && /standby/.test(r.body) ? true : undefined;
      },
      logs,
    );
    const stoppedAt = Date.now();
    opB.kill('SIGTERM');
    await opB.exited;
    assert.equal(opB.child.exitCode, 0, `op-b exit code after SIGTERM: got ${opB.child.exitCode}, want 0`);
    assert.match(opB.output, /released the leader Lease/);
    await eventually('op-c holds the Lease', 10_000, async () => ((await leaseHolder()) === 'op-c' ? true : undefined), logs);
    const took = (Date.now() - stoppedAt) / 1000;
    assert.ok(took < 6, `a released Lease is taken at the standby's next try (about 2 s), took ${took.toFixed(1)} s`);

    // Someone else now holds the Lease: op-c must stop reconciling, and exits like controller-runtime does.
    await cluster.kubectlOk([
      'patch',
      'lease',
      '-n',
      NS,
      'netoken-operator',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { holderIdentity: 'intruder' } }),
    ]);
    const c = opC;
    await eventually('op-c exits', 10_000, async () => (c.child.exitCode !== null ? true : undefined), logs);
    assert.equal(c.child.exitCode, 1, 'losing the Lease is an error exit, so the pod restarts as a standby');
    assert.match(c.output, /lost the leader Lease; stopping.*the Lease is now held by intruder/);
  });

  test("no key ever appears in the operators' logs or in any policy status; no request was forbidden", async () => {
    const secrets = await cluster.getJson<{ items: SecretJson[] }>(['secrets', '-n', NS]);
    const keys: string[] = [];
    for (const s of secrets.items) {
      for (const v of Object.values(s.data ?? {})) {
        const raw = Buffer.from(v, 'base64');
        keys.push(v, raw.toString('hex'), raw.toString('base64url'));
      }
    }
    assert.ok(keys.length >= 3 * 6, `keys collected: ${keys.length / 3}`);
    const statuses = JSON.stringify(
      (await cluster.getJson<{ items: PolicyJson[] }>(['tokenpolicies'])).items.map((p) => p.status),
    );
    for (const [who, text] of [...all().map((p) => [p.name, p.output] as const), ['policy status', statuses] as const]) {
      assert.ok(text.length > 0, `${who} has output`);
      for (const k of keys) assert.ok(!text.includes(k), `${who} contains a key (${k.length} characters)`);
    }
    for (const [who, text] of all().map((p) => [p.name, p.output] as const)) {
      const forbidden = text.split('\n').filter((l) => /forbidden|HTTP 403|\(403\)/i.test(l));
      assert.deepEqual(forbidden, [], `${who}: the chart's RBAC is enough`);
    }
  });
  test('a leader that cannot renew its Lease stops writing before a standby can take over, and its writes in flight are aborted', async (t) => {
    // The Lease is free again (op-c left it to "intruder"). A renewal reads the Lease first: once the
    // binding is gone that read is refused, so the audit log's last Lease write of op-fenced is its last renewal.
    await cluster.kubectlOk(['delete', 'lease', '-n', NS, 'netoken-operator']);
    // The leader-to-be runs as an account of its own, with the chart's rights through bindings of its own:
    // taking its namespace binding away leaves it unable to renew the Lease while it can still write policy status.
    await cluster.apply(`apiVersion: v1
kind: ServiceAccount
metadata: {name: op-fenced, namespace: ${NS}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: op-fenced}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: netoken-operator}
subjects: [{kind: ServiceAccount, name: op-fenced, namespace: ${NS}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: op-fenced, namespace: ${NS}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: netoken-operator}
subjects: [{kind: ServiceAccount, name: op-fenced, namespace: ${NS}}]
`);
    const fencedUser = `system:serviceaccount:${NS}:op-fenced`;
    fenced = await OperatorProcess.start(cluster, await cluster.serviceAccountKubeconfig(NS, 'op-fenced'), 'op-fenced');
    const f = fenced;
    await eventually(
      'op-fenced leads',
      30_000,
      async () => ((await leaseHolder()) === 'op-fenced' && (await f.get('/readyz')).body.includes('leader') ? true : undefined),
      () => f.tail(),
    );
    standby = await OperatorProcess.start(cluster, saKubeconfig, 'op-standby');
    const sb = standby;
    await eventually(
      'op-standby stands by',
      30_000,
      async () => ((await sb.get('/readyz')).body.includes('standby') ? true : undefined),
      () => sb.tail(),
    );

    // Work for the leader: a node that keeps failing and recovering, so the policy's status keeps changing.
    await cluster.apply(policyYaml('churn', '{secretRef: {name: churn-key}}', '{matchLabels: {role: edge}}'));
    const g = await eventually(
      'churn has a generation',
      10_000,
      async () => (await getPolicy('churn'))?.metadata.generation,
      () => f.tail(),
    );
    await writeNodeState('n2', [applied('churn', g)]);
    let churning = true;
    let flips = 0;
    const churn = (async () => {
      while (churning) {
        const failing = flips++ % 2 === 0;
        await writeNodeState('n1', [applied('churn', g, failing ? [{ reason: 'AttachFailed', message: `flip ${flips}` }] : [])]);
        await sleep(300);
      }
    })();
    await eventually(
      "op-fenced writes churn's status",
      15_000,
      async () =>
        cluster
          .auditEvents()
          .some((e) => e.user.username === fencedUser && e.objectRef?.name === 'churn' && e.objectRef.subresource === 'status')
          ? true
          : undefined,
      () => f.tail(),
    );

    const revokedAt = Date.now();
    await cluster.kubectlOk(['delete', 'rolebinding', '-n', NS, 'op-fenced']);
    await eventually(
      'op-standby takes the Lease over',
      40_000,
      async () => ((await leaseHolder()) === 'op-standby' ? true : undefined),
      () => `${f.tail()}\n${sb.tail()}`,
    );
    await sleep(3000); // the new leader works on; the old one must stay silent
    churning = false;
    await churn;
    await eventually(
      'op-fenced exits',
      10_000,
      async () => (f.child.exitCode !== null ? true : undefined),
      () => f.tail(),
    );
    assert.equal(f.child.exitCode, 1);
    assert.match(f.output, /lost the leader Lease; stopping/);

    const audit = cluster.auditEvents();
    const at = (e: { stageTimestamp: string }): number => Date.parse(e.stageTimestamp);
    const writesOf = (user: string) =>
      audit.filter(
        (e) =>
          e.user.username === user &&
          e.stage === 'ResponseComplete' &&
          e.objectRef?.resource !== 'leases' &&
          e.objectRef?.resource !== 'events',
      );
    const renewals = audit.filter(
      (e) =>
        e.user.username === fencedUser &&
        e.objectRef?.resource === 'leases' &&
        (e.verb === 'update' || e.verb === 'create') &&
        (e.responseStatus?.code ?? 0) < 300,
    );
    assert.ok(
      renewals.length > 0,
      `the audit log has the Lease writes of op-fenced: ${JSON.stringify(
        audit
          .filter((e) => e.objectRef?.resource === 'leases')
          .slice(-8)
          .map((e) => [e.user.username, e.verb, e.responseStatus?.code]),
      )}`,
    );
    const lastRenewal = Math.max(...renewals.map((e) => Date.parse(e.requestReceivedTimestamp)));
    const takeover = audit.find(
      (e) =>
        e.user.username === `system:serviceaccount:${NS}:netoken-operator` &&
        e.objectRef?.resource === 'leases' &&
        (e.verb === 'update' || e.verb === 'create') &&
        (e.responseStatus?.code ?? 0) < 300 &&
        Date.parse(e.requestReceivedTimestamp) > revokedAt,
    );
    assert.ok(takeover, 'the standby took the Lease over');
    const fencedWrites = writesOf(fencedUser).filter((e) => (e.responseStatus?.code ?? 0) < 300);
    const afterRevoke = fencedWrites.filter((e) => at(e) > revokedAt);
    assert.ok(
      afterRevoke.length > 0,
      'the cut-off leader kept writing status until its renew deadline (else this test shows nothing)',
    );
    const lastWrite = Math.max(...fencedWrites.map(at));
    t.diagnostic(
      `revoked ${new Date(revokedAt).toISOString()}, last renewal began ${new Date(lastRenewal).toISOString()}, ` +
        `${afterRevoke.length} writes after it, the last at ${new Date(lastWrite).toISOString()}; standby took over at ${takeover.requestReceivedTimestamp}`,
    );
    assert.ok(
      lastWrite < Date.parse(takeover.requestReceivedTimestamp),
      `the old leader's last write (${new Date(lastWrite).toISOString()}) came before the standby took over (${takeover.requestReceivedTimestamp})`,
    );
    assert.ok(
      lastWrite <= lastRenewal + 10_000 + 1000,
      `no write after the renew deadline: last renewal began ${new Date(lastRenewal).toISOString()}, last write ${new Date(lastWrite).toISOString()}`,
    );
    assert.ok(
      writesOf(`system:serviceaccount:${NS}:netoken-operator`).some(
        (e) => at(e) > Date.parse(takeover.requestReceivedTimestamp) && e.objectRef?.name === 'churn',
      ),
      "the new leader writes churn's status",
    );
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'churn', '--wait=false']);
  });
});
