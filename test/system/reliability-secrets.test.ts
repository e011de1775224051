/**
 * Keys stay secret: a marker and a verifier (static and keyed tokens, a previous key) run
 * through real connections and through every way a Secret can break (gone, the wrong
 * length, not base64, YAML that does not parse in several ways); then no key, nor the
 * garbage put in their place, appears in the logs (debug level), the status files,
 * `netoken status` (table and JSON), /metrics, or `netoken detach`. Files that hold keys
 * (the pinned policy map) and the run state are 0600 in 0700 directories, a policy file
 * others may read is warned about, and a Secret that breaks does not take the keys away.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../../src/lib/files.js';
import { agentIn, type AgentRun } from '../lib/agent.js';
import { keySecret, rawSecret, tokenPolicy, yamlStream } from '../lib/manifests.js';
import { createTopology, run, type Topology } from '../lib/netns.js';
import { connect, startServer } from '../lib/tcp.js';
import { keyLeaks } from './reliability-lib.js';
import { layoutDir } from '../../src/agent/layout.js';

const KS = randomBytes(8);
const KK = randomBytes(16);
const KP = randomBytes(16);
/** what broken Secrets hold instead: never a key, but not to be printed either */
const GARBAGE = randomBytes(7);
const GARBAGE_TEXT = `@${randomBytes(6).toString('hex')}@`;
const METRICS = '127.0.0.1:9464';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

const mode = (p: string): string => `0${(statSync(p).mode & 0o777).toString(8)}`;

function policies(port: number, dev: string, serverDev: string): string[] {
  return [
    tokenPolicy(
      's-static',
      `nodeSelector: {matchLabels: {role: client}}
token: {mode: Static, secretRef: {name: static-key}}
interfaces: {names: [${dev}]}
egress: {destinations: [{cidr: 192.0.2.0/24}]}`,
    ),
    tokenPolicy(
      's-keyed',
      `token: {mode: Keyed, secretRef: {name: keyed-key}, epochSeconds: 60}
nodeSelector: {matchLabels: {role: client}}
interfaces: {names: [${dev}]}
egress: {destinations: [{cidr: 0.0.0.0/0, ports: [${port}]}]}`,
    ),
    tokenPolicy(
      's-guard',
      `token: {mode: Keyed, secretRef: {name: keyed-key}, epochSeconds: 60}
nodeSelector: {matchLabels: {role: server}}
interfaces: {names: [${serverDev}]}
ingress: {action: Enforce, ports: [${port}]}`,
    ),
  ];
}

const staticSecret = (data: string): string => rawSecret('static-key', data);
const keyedSecret = (data: string): string => rawSecret('keyed-key', data);
const GOOD_STATIC = keySecret('static-key', { current: KS });
const GOOD_KEYED = keySecret('keyed-key', { current: KK, previous: KP });

async function metrics(ns: string): Promise<string> {
  const r = await run('nsenter', [
    `--net=/var/run/netns/${ns}`,
    '--',
    process.execPath,
    '-e',
    `fetch("http://${METRICS}/metrics").then(r => r.text()).then(t => process.stdout.write(t))`,
  ]);
  return r.stdout;
}

describe('keys stay secret', () => {
  test('no key in logs, status, netoken status, metrics or detach, through broken Secrets of every kind; broken Secrets keep the keys in use', async (t) => {
    const topo = await createTopology({ name: 'keys', kind: 'pair' });
    topologies.push(topo);
    const client = agentIn(topo.client.ns, 'keys-c');
    const server = agentIn(topo.server.ns, 'keys-s');
    const agents: AgentRun[] = [client, server];
    const leaks: string[] = [];
    const outputs: Array<[string, string]> = [];
    try {
      const echo = await startServer(topo.server.ns, { port: 0 });
      const base = policies(echo.port, topo.client.dev, topo.server.dev);
      const write = (secrets: string[]): void => {
        for (const a of agents) a.writePolicy(yamlStream([...base, ...secrets]));
      };
      write([GOOD_STATIC, GOOD_KEYED]);
      // The policy file holds keys: readable by others, it is warned about (once).
      chmodSync(client.policyFile, 0o644);
      await client.start(['--node-label', 'role=client', '--metrics-address', METRICS]);
      await server.start(['--node-label', 'role=server', '--metrics-address', METRICS]);
      await client.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the marker');
      await server.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');
      const handshake = async (what: string): Promise<void> => {
        const r = await connect(topo.client.ns, topo.server.ipv4, echo.port, { timeoutMs: 2500 });
        assert.ok(r.ok, `${what}: the keyed handshake through Enforce: ${JSON.stringify(r)}`);
      };
      await handshake('with good Secrets');
      assert.equal(
        client
          .log()
          .split('\n')
          .filter((l) => /holds token keys but others than its owner may read it/.test(l)).length,
        1,
        'a world-readable policy file is warned about once',
      );
      assert.equal(
        server
          .log()
          .split('\n')
          .filter((l) => /holds token keys but others/.test(l)).length,
        0,
        'a 0600 policy file is not',
      );

      // Every way a Secret breaks; each must be reported without its content, and none may take the keys away.
      const broken: Array<[string, string[], RegExp]> = [
        [
          'the keyed Secret deleted',
          [GOOD_STATIC],
          /s-keyed.*SecretUnavailable.*Secret "keyed-key" named by spec\.token\.secretRef is not in policy\.yaml; the keys read before stay in use/,
        ],
        [
          'a key of the wrong length',
          [GOOD_STATIC, keyedSecret(`data: {current: ${GARBAGE.toString('base64')}}`)],
          /holds 7 bytes; a Keyed token needs exactly 16/,
        ],
        [
          'a key that is not base64',
          [GOOD_STATIC, keyedSecret(`data: {current: "${GARBAGE_TEXT}"}`)],
          /data\.current is not valid base64/,
        ],
        [
          'a duplicated key',
          [GOOD_STATIC, keyedSecret(`data:\n  current: ${KK.toString('base64')}\n  current: ${KP.toString('base64')}`)],
          /Map keys must be unique at line \d+/,
        ],
        ['an unterminated quote', [GOOD_STATIC, keyedSecret(`data:\n  current: "${KK.toString('base64')}\n`)], /invalid YAML/],
        [
          'a bad escape',
          [GOOD_STATIC, keyedSecret(`data:\n  current: "${KK.toString('base64')}\\q"`)],
          /invalid escape sequence/,
        ],
        [
          'a tag made of the key',
          [GOOD_STATIC, keyedSecret(`data:\n  current: !<${KK.toString('base64')}> ${KK.toString('base64')}`)],
          /./,
        ],
        [
          'the static key in a block scalar header',
          [staticSecret(`data:\n  current: |${KS.toString('hex')}\n    x`), GOOD_KEYED],
          /./,
        ],
      ];
      for (const [what, secrets, want] of broken) {
        const before = client.status()!.reconciles;
        const beforeServer = server.status()!.reconciles;
        write(secrets);
        const s = await client.waitStatus((x) => x.reconciles > before, 15_000, what);
        const table = (await client.cli(['status'])).stdout;
        assert.match(JSON.stringify(s) + table, want, `${what}: reported`);
        outputs.push([`${what}: client status`, table + JSON.stringify(s)]);
        await server.waitStatus((x) => x.reconciles > beforeServer, 15_000, `${what} (server)`);
        await handshake(what);
        t.diagnostic(
          `${what}: ${[...s.documentErrors.map((e) => e.message), ...s.policies.flatMap((p) => p.errors.map((e) => `${p.name}: ${e.reason}: ${e.message}`))].join(' | ') || 'accepted'}`,
        );
      }
      write([GOOD_STATIC, GOOD_KEYED]);
      const last = client.status()!.reconciles;
      const fixed = await client.waitStatus((x) => x.reconciles > last && x.ready, 15_000, 'the Secrets fixed');
      assert.deepEqual(
        fixed.policies.flatMap((p) => p.errors),
        [],
        'every error clears',
      );
      await handshake('after the fix');

      // Where keys must never be.
      for (const a of agents) {
        const who = a === client ? 'client' : 'server';
        outputs.push([`${who} log`, a.log()]);
        outputs.push([`${who} status.json`, readFileSync(path.join(a.runDir, 'status.json'), 'utf8')]);
        outputs.push([`${who} state.json`, readFileSync(path.join(a.runDir, 'state.json'), 'utf8')]);
        outputs.push([`${who} netoken status`, (await a.cli(['status'])).stdout]);
        outputs.push([`${who} netoken status -o json`, (await a.cli(['status', '-o', 'json'])).stdout]);
        const m = await metrics(a.ns);
        assert.match(m, /netoken_packets_total\{/, `${who} serves metrics`);
        outputs.push([`${who} metrics`, m]);
      }
      for (const [where, text] of outputs) {
        leaks.push(...keyLeaks(where, text, [KS, KK, KP, GARBAGE]));
        if (text.includes(GARBAGE_TEXT)) leaks.push(`${where}: the garbage text`);
      }
      assert.deepEqual(leaks, [], 'no key material anywhere');

      // Files: what holds keys is 0600 in 0700 directories.
      for (const a of agents) {
        assert.equal(mode(a.runDir), '0700', 'the run directory');
        assert.equal(mode(path.join(a.runDir, 'state.json')), '0600', 'the run state');
        assert.equal(mode(a.stateDir), '0700', 'the state directory');
        for (const dir of ['maps', 'links', path.relative(a.stateDir, layoutDir(a.stateDir))])
          assert.equal(mode(path.join(a.stateDir, dir)), '0700', `${dir}/`);
        const pins = readdirSync(layoutDir(a.stateDir));
        assert.ok(pins.includes('nt_policies'), `the maps are pinned in ${layoutDir(a.stateDir)}: ${pins.join(', ')}`);
        for (const pin of pins) {
          assert.equal(
            statSync(path.join(layoutDir(a.stateDir), pin)).mode & 0o077,
            0,
            `the pin of ${pin} (nt_policies holds the keys) is not readable by others: ${mode(path.join(layoutDir(a.stateDir), pin))}`,
          );
        }
      }
      await echo.stop();
      await client.stop();
      await server.stop();
      for (const a of agents) {
        const d = await a.cli(['detach']);
        assert.deepEqual(keyLeaks('detach', d.stdout + d.stderr, [KS, KK, KP]), []);
      }
    } finally {
      for (const a of agents) await a.cleanup();
    }
  });

  test('files written atomically get exactly their mode, whatever was in the way', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nttest-files-'));
    try {
      const file = path.join(dir, 'state.json');
      const tmp = `${file}.${process.pid}.tmp`;
      // A leftover of a crash, readable by everyone.
      writeFileSync(tmp, 'old', { mode: 0o666 });
      chmodSync(tmp, 0o666);
      writeFileAtomic(file, '{"a":1}', 0o600);
      assert.equal(mode(file), '0600', "not the leftover's mode");
      assert.equal(readFileSync(file, 'utf8'), '{"a":1}');
      // A link planted where the temporary file goes: removed, never written through.
      const target = path.join(dir, 'elsewhere');
      writeFileSync(target, 'untouched', { mode: 0o644 });
      symlinkSync(target, tmp);
      writeFileAtomic(file, '{"a":2}', 0o600);
      assert.equal(readFileSync(target, 'utf8'), 'untouched', 'the link target is untouched');
      assert.equal(lstatSync(file).isSymbolicLink(), false);
      assert.equal(mode(file), '0600');
      // An over-tight umask does not widen, a wide one does not leak.
      const old = process.umask(0o000);
      try {
        writeFileAtomic(file, 'x', 0o600);
        assert.equal(mode(file), '0600');
      } finally {
        process.umask(old);
      }
      assert.deepEqual(readdirSync(dir).sort(), ['elsewhere', 'state.json'], 'no temporary file left');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
