import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeKeys, validatePolicy } from '../lib/policy.js';
import { KEY_GENERATION_ANNOTATION, type TokenKeys, type TokenPolicy, keyGenerations, secondKey } from '../lib/types.js';
import {
  DEFAULT_RETIRE_MARGIN_MS,
  type NodeKeys,
  REVOKE_ANNOTATION,
  REVOKE_HANDLED_ANNOTATION,
  ROTATE_ANNOTATION,
  ROTATE_HANDLED_ANNOTATION,
  type RotationPatch,
  type RotationPlan,
  STEP_SINCE_ANNOTATION,
  SWITCHED_AT_ANNOTATION,
  planRotation,
  retireWindowMs,
} from './rotation.js';
import { ROTATED_AT_ANNOTATION, type SecretLike } from './secrets.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');
const MIN = 60_000;

type Annotated = TokenPolicy & { annotations: Record<string, string> };

function policy(token: Record<string, unknown> = {}, annotations: Record<string, string> = {}): Annotated {
  const p = validatePolicy({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenPolicy',
    metadata: { name: 'p', annotations },
    spec: { token: { mode: 'Keyed', epochSeconds: 30, secretRef: { name: 'k' }, ...token }, egress: {} },
  });
  return { ...p, annotations };
}

/** Key bytes by a fill value, so a test can tell keys apart. */
const key = (fill: number): string => Buffer.alloc(16, fill).toString('base64');
let fill = 0x40;
const random = (n: number): Buffer => Buffer.alloc(n, ++fill);

function secret(data: Record<string, string>, annotations: Record<string, string> = {}): SecretLike {
  return {
    metadata: {
      name: 'k',
      resourceVersion: '7',
      annotations: { [ROTATED_AT_ANNOTATION]: '2026-03-01T11:59:00Z', ...annotations },
    },
    data,
  };
}

/** A Secret after a merge patch, as the API server would store it. */
function applyPatch(s: SecretLike, patch: RotationPatch): SecretLike {
  const annotations: Record<string, string> = { ...(s.metadata?.annotations ?? {}) };
  for (const [k, v] of Object.entries(patch.metadata.annotations))
    if (v === null) delete annotations[k];
    else annotations[k] = v;
  const data: Record<string, string> = { ...(s.data ?? {}) };
  for (const [k, v] of Object.entries(patch.data ?? {}))
    if (v === null) delete data[k];
    else data[k] = v;
  return {
    metadata: { ...s.metadata, annotations, resourceVersion: String(Number(s.metadata?.resourceVersion ?? 0) + 1) },
    data,
  };
}

function plan(p: Annotated, s: SecretLike, nodes: Record<string, NodeKeys | undefined>, now: number, drive = true): RotationPlan {
  const keys = decodeKeys(s, p.spec.token.mode, 'test');
  return planRotation({
    policy: p,
    annotations: p.annotations,
    secret: s,
    keys,
    nodes: new Map(Object.entries(nodes)),
    drive,
    now,
    random,
  });
}

const at = (g: number, accepts: number[] = [g]): NodeKeys => ({ signs: g, accepts });

test('a rotation goes publish, switch, retire: each step waits for every node, and the old key stays an epoch, the skew and a margin', () => {
  const p = policy({ rotation: { period: '1h' } });
  let s = secret({ current: key(1) }, { [KEY_GENERATION_ANNOTATION]: '4', [ROTATED_AT_ANNOTATION]: '2026-03-01T11:00:00Z' });

  // Due: publish generation 5 as next; markers keep signing with 4.
  let r = plan(p, s, { a: at(4), b: at(4) }, T0);
  assert.equal(r.action, 'publish');
  assert.equal(r.step, 'Publishing');
  assert.equal(r.patch?.metadata.resourceVersion, '7', 'the write is conditional on what was read');
  assert.equal(r.patch?.data?.current, undefined, 'markers are not switched yet');
  assert.ok(r.patch?.data?.next, 'a next key is published');
  assert.deepEqual(
    r.events.map((e) => e.reason),
    ['RotationStarted'],
  );
  assert.match(r.events[0]!.message, /generation 5 published .*rotation.period 1h elapsed/);
  assert.deepEqual(r.condition, {
    status: 'True',
    reason: 'Publishing',
    message: 'key generation 5 published: 0 of 2 nodes accept it',
  });
  s = applyPatch(s, r.patch!);
  const published = s.data!.next;

  // One node accepts 5, one not yet: wait.
  r = plan(p, s, { a: at(4, [4, 5]), b: at(4) }, T0 + 1000);
  assert.equal(r.patch, undefined);
  assert.equal(r.condition.message, 'key generation 5 published: 1 of 2 nodes accept it; waiting for b');
  assert.deepEqual(r.stalled, []);
  r = plan(p, s, { a: at(4, [4, 5]), b: undefined }, T0 + 1000);
  assert.equal(r.patch, undefined, 'a node that reported nothing is waited for too');

  // Both accept 5: markers switch; 4 stays accepted as previous.
  r = plan(p, s, { a: at(4, [4, 5]), b: at(4, [4, 5]) }, T0 + 2000);
  assert.equal(r.action, 'switch');
  assert.equal(r.patch?.data?.current, published, 'the published key becomes current');
  assert.equal(r.patch?.data?.previous, key(1), 'the old current key stays as previous');
  assert.equal(r.patch?.data?.next, null);
  assert.equal(r.patch?.metadata.annotations[KEY_GENERATION_ANNOTATION], '5');
  assert.deepEqual(
    r.events.map((e) => e.reason),
    ['KeySwitched'],
  );
  s = applyPatch(s, r.patch!);

  // Not every node signs with 5 yet.
  r = plan(p, s, { a: at(5, [4, 5]), b: at(4, [4, 5]) }, T0 + 3000);
  assert.equal(r.patch, undefined);
  assert.match(r.condition.message, /1 of 2 nodes sign with it; waiting for b/);

  // Every node signs with 5: the retire clock starts.
  const window = 30_000 + 5000 + DEFAULT_RETIRE_MARGIN_MS;
  assert.equal(retireWindowMs(p), window, 'epochSeconds 30 + clockSkewSeconds 5 (default) + 60 s');
  r = plan(p, s, { a: at(5, [4, 5]), b: at(5, [4, 5]) }, T0 + 4000);
  assert.equal(r.action, 'mark-switched');
  assert.equal(r.patch?.data, undefined, 'no key changes yet');
  assert.equal(r.requeueAt, T0 + 4000 + window);
  s = applyPatch(s, r.patch!);
  r = plan(p, s, { a: at(5, [4, 5]), b: at(5, [4, 5]) }, T0 + 4000 + window - 1000);
  assert.equal(r.patch, undefined, 'generation 4 is still accepted within the window');
  assert.equal(r.requeueAt, T0 + 4000 + window);

  r = plan(p, s, { a: at(5, [4, 5]), b: at(5, [4, 5]) }, T0 + 4000 + window);
  assert.equal(r.action, 'retire');
  assert.equal(r.step, 'Idle');
  assert.deepEqual(r.patch?.data, { previous: null });
  assert.deepEqual(
    r.events.map((e) => e.reason),
    ['KeyRetired'],
  );
  assert.deepEqual(r.condition, {
    status: 'False',
    reason: 'Idle',
    message: 'no rotation under way; markers sign with key generation 5',
  });
  s = applyPatch(s, r.patch!);
  assert.deepEqual(Object.keys(s.data!), ['current']);
  assert.equal(s.metadata?.annotations?.[SWITCHED_AT_ANNOTATION], undefined);

  // The next rotation is due a period after the switch.
  r = plan(p, s, { a: at(5), b: at(5) }, T0 + 5 * MIN);
  assert.equal(r.patch, undefined);
  assert.equal(r.requeueAt, T0 + 2000 + 60 * MIN, 'next due a period after the switch');
});

test('netoken.io/rotate starts a rotation once per value, also without rotation.period', () => {
  const p = policy({}, { [ROTATE_ANNOTATION]: 'now-1' });
  const s = secret({ current: key(1) }, { [KEY_GENERATION_ANNOTATION]: '1' });
  const r = plan(p, s, { a: at(1) }, T0);
  assert.equal(r.action, 'publish');
  assert.match(r.events[0]!.message, /annotation netoken.io\/rotate=now-1/);
  assert.deepEqual(JSON.parse(r.patch!.metadata.annotations[ROTATE_HANDLED_ANNOTATION]!), { p: 'now-1' });
  // Back to Idle after the rotation: the same value does not start another one.
  const idle = secret(
    { current: key(2) },
    { [KEY_GENERATION_ANNOTATION]: '2', [ROTATE_HANDLED_ANNOTATION]: JSON.stringify({ p: 'now-1', other: 'x' }) },
  );
  assert.equal(plan(p, idle, { a: at(2) }, T0).patch, undefined);
  const again = plan(policy({}, { [ROTATE_ANNOTATION]: 'now-2' }), idle, { a: at(2) }, T0);
  assert.equal(again.action, 'publish');
  assert.deepEqual(
    JSON.parse(again.patch!.metadata.annotations[ROTATE_HANDLED_ANNOTATION]!),
    { p: 'now-2', other: 'x' },
    'another policy sharing the Secret keeps its own mark',
  );
});

test('a stalled step names the silent nodes; onStall Proceed goes on without them, Wait keeps waiting', () => {
  const since = { [KEY_GENERATION_ANNOTATION]: '3', [STEP_SINCE_ANNOTATION]: '2026-03-01T12:00:00Z' };
  const s = secret({ current: key(1), next: key(2) }, since);
  const nodes = { a: at(3, [3, 4]), b: undefined, c: at(3) };

  const before = plan(policy({ rotation: { period: '1h', stallTimeout: '2m' } }), s, nodes, T0 + 2 * MIN - 1000);
  assert.equal(before.patch, undefined);
  assert.deepEqual(before.stalled, []);
  assert.equal(before.requeueAt, T0 + 2 * MIN, 'looks again when the step would stall');

  const proceed = plan(policy({ rotation: { period: '1h', stallTimeout: '2m' } }), s, nodes, T0 + 2 * MIN);
  assert.equal(proceed.action, 'switch');
  assert.deepEqual(proceed.stalled, ['b', 'c']);
  assert.deepEqual(
    proceed.events.map((e) => [e.type, e.reason]),
    [
      ['Warning', 'KeyRotationStalled'],
      ['Normal', 'KeySwitched'],
    ],
  );
  assert.match(
    proceed.events[0]!.message,
    /2 node\(s\) did not report that they accept key generation 4 within rotation.stallTimeout: b, c; markers switch without them/,
  );

  const wait = plan(policy({ rotation: { period: '1h', stallTimeout: '2m', onStall: 'Wait' } }), s, nodes, T0 + 2 * MIN);
  assert.equal(wait.patch, undefined);
  assert.deepEqual(wait.stalled, ['b', 'c']);
  assert.equal(wait.condition.reason, 'Stalled');
  assert.match(wait.events[0]!.message, /waits for them \(rotation.onStall: Wait\)/);

  // The default stall timeout is 10 minutes.
  assert.equal(plan(policy({ rotation: { period: '1h' } }), s, nodes, T0 + 9 * MIN).patch, undefined);
  assert.equal(plan(policy({ rotation: { period: '1h' } }), s, nodes, T0 + 10 * MIN).action, 'switch');
});

test('a node still on an older key long after a rotation is named while idle', () => {
  const s = secret({ current: key(1) }, { [KEY_GENERATION_ANNOTATION]: '9', [STEP_SINCE_ANNOTATION]: '2026-03-01T11:00:00Z' });
  const r = plan(policy(), s, { a: at(9), b: at(8, [7, 8]), c: undefined }, T0);
  assert.deepEqual(r.stalled, ['b'], 'a node with no report at all is a matter of its policy status, not of the key');
  assert.equal(r.condition.reason, 'Idle');
  assert.match(r.events[0]!.message, /still report an older key than generation 9/);
});

test('netoken.io/revoke replaces every key at once, keeps none, and is acted on once', () => {
  const p = policy({}, { [REVOKE_ANNOTATION]: 'leak-1', [ROTATE_ANNOTATION]: 'r1' });
  const s = secret({ current: key(1), next: key(2) }, { [KEY_GENERATION_ANNOTATION]: '3' });
  const r = plan(p, s, { a: at(3, [3, 4]) }, T0);
  assert.equal(r.action, 'revoke');
  const data = r.patch!.data!;
  assert.equal(data.previous, null);
  assert.equal(data.next, null);
  assert.ok(data.current && data.current !== key(1) && data.current !== key(2), 'a fresh key');
  assert.equal(r.patch!.metadata.annotations[KEY_GENERATION_ANNOTATION], '5', 'past the published generation 4 too');
  assert.deepEqual(JSON.parse(r.patch!.metadata.annotations[REVOKE_HANDLED_ANNOTATION]!), { p: 'leak-1' });
  assert.deepEqual(
    JSON.parse(r.patch!.metadata.annotations[ROTATE_HANDLED_ANNOTATION]!),
    { p: 'r1' },
    'a rotation asked for alongside is done',
  );
  assert.deepEqual(
    r.events.map((e) => [e.type, e.reason]),
    [['Warning', 'KeyRevoked']],
  );
  assert.match(r.events[0]!.message, /key generations 3 and 4 revoked at once .*refused/);
  assert.equal(r.condition.reason, 'Revoked');
  const after = plan(p, applyPatch(s, r.patch!), { a: at(3, [3, 4]) }, T0 + 1000);
  assert.equal(after.action, undefined, 'the same value is not acted on twice');
  assert.equal(after.condition.reason, 'Revoked', 'the revocation stays visible until the next rotation');
  assert.match(after.condition.message, /the keys before generation 5 were revoked at 2026-03-01T12:00:00Z/);
  const next = plan(
    policy({}, { [REVOKE_ANNOTATION]: 'leak-1', [ROTATE_ANNOTATION]: 'r2' }),
    applyPatch(s, r.patch!),
    { a: at(5) },
    T0 + 2000,
  );
  assert.equal(next.action, 'publish');
  assert.equal(next.patch!.metadata.annotations['netoken.io/revoked-at'], null);
});

test("a user's Secret without rotation is staged by hand: progress is reported, nothing is written", () => {
  const p = policy({}, { [ROTATE_ANNOTATION]: 'x' });
  const idle = plan(p, secret({ current: key(1) }, { [KEY_GENERATION_ANNOTATION]: '1' }), { a: at(1) }, T0, false);
  assert.equal(idle.patch, undefined);
  assert.deepEqual(
    idle.events.map((e) => e.reason),
    ['RotationIgnored'],
  );
  const staged = secret({ current: key(1), next: key(2) }, { [KEY_GENERATION_ANNOTATION]: '1' });
  const r = plan(policy(), staged, { a: at(1, [1, 2]), b: at(1, [1, 2]) }, T0 + 3600 * 1000, false);
  assert.equal(r.patch, undefined, 'never switched for the user, even when every node accepts');
  assert.match(r.condition.message, /2 of 2 nodes accept it; make it current/);
  const unnumbered = plan(policy(), secret({ current: key(1) }), { a: undefined }, T0, false);
  assert.equal(unnumbered.patch, undefined);
  assert.equal(unnumbered.condition.reason, 'Unnumbered');
});

test('a Secret that does not number its keys is numbered first, previous key and all', () => {
  const s = secret({ current: key(1), previous: key(2) });
  const r = plan(policy({ rotation: { period: '1h' } }), s, { a: undefined }, T0);
  assert.equal(r.action, 'number');
  assert.equal(r.patch!.metadata.annotations[KEY_GENERATION_ANNOTATION], '1');
  assert.equal(r.patch!.data, undefined);
  const keys = decodeKeys(applyPatch(s, r.patch!), 'Keyed', 'test');
  assert.deepEqual(keyGenerations(keys), { signs: 1, accepts: [0, 1] });
});

test('no plan says a key', () => {
  const p = policy({ rotation: { period: '1h', stallTimeout: '1m' } }, { [REVOKE_ANNOTATION]: 'x' });
  const texts: string[] = [];
  for (const s of [
    secret({ current: key(1), next: key(2) }, { [KEY_GENERATION_ANNOTATION]: '2' }),
    secret({ current: key(1), previous: key(2) }, { [KEY_GENERATION_ANNOTATION]: '2' }),
  ]) {
    for (const pol of [p, policy({ rotation: { period: '1h', stallTimeout: '1m' } })]) {
      const r = plan(pol, s, { a: undefined }, T0 + 3600 * 1000);
      texts.push(JSON.stringify([r.condition, r.events, r.stalled]));
    }
  }
  for (const t of texts) {
    for (const f of [1, 2]) assert.ok(!t.includes(key(f)) && !t.includes(Buffer.alloc(16, f).toString('hex')), t);
  }
});

/**
 * The promise, in a model of a cluster: nodes see the Secret late (each at its own random
 * delay, one cut off for minutes at a time) and report later still; the operator plans every
 * second. At every instant, the key every node signs with is one every node accepts.
 */
test('model: with nodes seeing the Secret at different times, no node ever signs with a key another refuses', () => {
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const p = policy({ rotation: { period: '3m', stallTimeout: '30m' } });
  let s: SecretLike = secret(
    { current: key(1) },
    { [KEY_GENERATION_ANNOTATION]: '1', [ROTATED_AT_ANNOTATION]: '2026-03-01T12:00:00Z' },
  );
  interface Node {
    view: TokenKeys;
    seenRv: string;
    report?: NodeKeys;
    reportAt: number;
    nextLook: number;
  }
  const names = ['a', 'b', 'c', 'd'];
  const nodes = new Map<string, Node>(
    names.map((n) => [n, { view: decodeKeys(s, 'Keyed', n), seenRv: '7', report: at(1), reportAt: Infinity, nextLook: 0 }]),
  );
  let switches = 0;
  let cut = false; // node d: cut off from the API server for minutes at a time, at random
  for (let now = T0; now < T0 + 6 * 3600 * 1000; now += 1000) {
    if ((now - T0) % 10_000 === 0 && rnd() < 0.05) cut = !cut;
    for (const [name, n] of nodes) {
      if (now >= n.nextLook && !(name === 'd' && cut)) {
        // Mostly within seconds; one look in ten takes up to two minutes (an API server under a burst).
        n.nextLook = now + Math.floor(rnd() * (rnd() < 0.1 ? 120_000 : 20_000));
        if (n.seenRv !== s.metadata!.resourceVersion) {
          n.view = decodeKeys(s, 'Keyed', name);
          n.seenRv = s.metadata!.resourceVersion!;
          n.reportAt = now + Math.floor(rnd() * 10_000);
        }
      }
      if (now >= n.reportAt && !(name === 'd' && cut)) {
        n.report = keyGenerations(n.view);
        n.reportAt = Infinity;
      }
    }
    for (const [m, marker] of nodes) {
      for (const [v, verifier] of nodes) {
        const accepted = [verifier.view.current, secondKey(verifier.view)].filter(Boolean) as Buffer[];
        assert.ok(
          accepted.some((k) => k.equals(marker.view.current)),
          `at +${(now - T0) / 1000} s, ${v} refuses what ${m} signs`,
        );
      }
    }
    const r = plan(p, s, Object.fromEntries([...nodes].map(([n, x]) => [n, x.report])), now);
    assert.deepEqual(r.stalled, []);
    if (r.patch) {
      if (r.action === 'switch') switches++;
      s = applyPatch(s, r.patch);
    }
  }
  assert.ok(switches >= 20, `rotations: ${switches}`);
});
