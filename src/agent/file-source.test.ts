import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '../lib/log.js';
import { sleep, waitUntil } from '../lib/wait.js';
import { FileSource, parsePolicyFile } from './file-source.js';

const token = Buffer.from('0011223344556677', 'hex').toString('base64');
const doc = (name: string, cidr = '10.0.0.0/8') => `
apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  token: {mode: Static, secretRef: {name: ${name}-token}}
  egress: {destinations: [{cidr: "${cidr}"}]}
---
apiVersion: v1
kind: Secret
metadata: {name: ${name}-token}
type: Opaque
data: {current: ${token}}
`;

/** The names of the policies the source holds now, sorted. */
const names = (src: FileSource): string[] =>
  src
    .snapshot()
    .policies.map((p) => p.metadata.name)
    .sort();

test('a bad document is named with its field; the valid ones still load', () => {
  const text = doc('good') + '---\n' + doc('bad', '10.0.0.0/99') + '---\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n';
  const r = parsePolicyFile(text, '/etc/netoken/policy.yaml');
  assert.deepEqual([...r.policies.keys()], ['good']);
  assert.equal(r.errors.length, 2);
  assert.equal(r.errors[0]!.where, 'policy.yaml document 3 (TokenPolicy "bad")');
  assert.match(r.errors[0]!.message, /spec\.egress\.destinations\[0\]\.cidr: .*prefix length/);
  assert.match(r.errors[1]!.message, /kind must be TokenPolicy or Secret, got "ConfigMap"/);
  assert.equal(r.fatal, false);
});

test('broken YAML changes nothing; an invalid edit keeps the last good policy', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-fs-'));
  const file = path.join(dir, 'p.yaml');
  try {
    writeFileSync(file, doc('web') + '---\n' + doc('api'));
    const src = new FileSource(file, {}, silentLogger());
    src.reload();
    assert.deepEqual(names(src), ['api', 'web']);
    assert.equal(src.snapshot().policies[0]!.metadata.generation, 1);

    writeFileSync(file, 'apiVersion: [unclosed\n');
    src.reload();
    assert.deepEqual(names(src), ['api', 'web'], 'broken YAML keeps all');
    assert.match(src.snapshot().documentErrors[0]!.message, /invalid YAML/);

    writeFileSync(file, doc('web', '10.0.0.0/99') + '---\n' + doc('api', '192.0.2.0/24'));
    src.reload();
    const web = src.snapshot().policies.find((p) => p.metadata.name === 'web')!;
    assert.equal(web.spec.egress?.destinations[0]!.cidr, '10.0.0.0/8', 'invalid edit keeps the last good web');
    const api = src.snapshot().policies.find((p) => p.metadata.name === 'api')!;
    assert.equal(api.spec.egress?.destinations[0]!.cidr, '192.0.2.0/24');
    assert.equal(api.metadata.generation, 2, 'a changed spec bumps the generation');

    writeFileSync(file, doc('api', '192.0.2.0/24'));
    src.reload();
    assert.deepEqual(
      src.snapshot().policies.map((p) => p.metadata.name),
      ['api'],
      'a removed document removes its policy',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a policy whose Secret is missing or wrong gets an error, never the key', () => {
  const text = doc('a').split('---')[0] + '---\napiVersion: v1\nkind: Secret\nmetadata: {name: b-token}\ndata: {current: AAAA}\n';
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-fs-'));
  const file = path.join(dir, 'p.yaml');
  try {
    writeFileSync(file, text);
    const src = new FileSource(file, {}, silentLogger());
    src.reload();
    const k = src.snapshot().keys.get('a');
    assert.ok(k instanceof Error);
    assert.match(k.message, /Secret "a-token" named by spec.token.secretRef is not in p.yaml/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a file rewritten in place is read once it stays the same: the empty moment of the rewrite removes nothing', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-fs-'));
  const file = path.join(dir, 'p.yaml');
  const seen: string[][] = [];
  // Polled every 20 ms, so a poll lands in every gap of 60 ms between truncating and writing;
  // read once unchanged for 600 ms, far above that gap even on a busy machine.
  const src = new FileSource(file, {}, silentLogger(), 20, 600);
  try {
    writeFileSync(file, doc('web'));
    await src.start(() => seen.push(names(src)));
    for (let i = 0; i < 3; i++) {
      writeFileSync(file, ''); // what `cat > file` and an in-place save do first
      await sleep(60);
      writeFileSync(file, doc('web', `10.${i}.0.0/16`));
      await sleep(1000);
    }
    await waitUntil('the last version read', 5000, () =>
      src.snapshot().policies[0]?.spec.egress?.destinations[0]?.cidr === '10.2.0.0/16' ? true : undefined,
    );
    assert.ok(seen.length >= 3, `each rewrite was read: ${seen.length} reads`);
    assert.deepEqual(
      seen.filter((n) => n.length === 0),
      [],
      'no read took the file while it was empty',
    );

    // A file emptied for good is read as such: its policies go.
    writeFileSync(file, '');
    await waitUntil('the emptied file read', 5000, () => (src.snapshot().policies.length === 0 ? true : undefined));
  } finally {
    src.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
