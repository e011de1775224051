/**
 * `netoken demo` (npm run demo): three network namespaces (a client, an intruder, a server)
 * joined by veth pairs with transmit checksum offload off; the agent marks on the client and
 * verifies on the server (XDP, Enforce), each with an embedded policy; real TCP connections,
 * and the SYNs as the server received them, decoded. The intruder connects without a token
 * and then with the client's token copied onto its own SYNs; neither gets through.
 * Everything it makes is removed at the end, also on Ctrl-C.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../lib/package.js';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../lib/packet.js';
import { parsePcap, toEthernet } from '../lib/pcap.js';
import { sleep, waitUntil } from '../lib/wait.js';
import { NT_OPT_EXID_DEFAULT as EXID, NT_OPT_KIND_DEFAULT as KIND } from '../lib/abi.js';
import { tryLockDir } from '../agent/lock.js';

/** The demo's SipHash key (16 bytes; in a cluster the operator generates one per policy). */
const KEY = Buffer.from('netoken-demo-key', 'ascii');
const EPOCH_SECONDS = 60;
const MARKED_PORT = 8080;
const UNMARKED_PORT = 9090;

const bin = path.join(PACKAGE_ROOT, 'bin/netoken.js');

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function say(line = ''): void {
  process.stdout.write(line + '\n');
}

function markerPolicy(iface: string): string {
  return `# the client's policy: mark SYNs to the server on port ${MARKED_PORT} (IPv4) and every port (IPv6)
apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: demo}
spec:
  interfaces: {names: [${iface}]}
  token: {mode: Keyed, secretRef: {name: demo-key}, epochSeconds: ${EPOCH_SECONDS}}
  option: {kind: ${KIND}, experimentId: 0x${EXID.toString(16)}}
  egress:
    destinations:
      - {cidr: 198.51.100.0/24, ports: [${MARKED_PORT}]}
      - {cidr: "2001:db8:100::/64"}
---
${keySecret('demo-key', KEY)}`;
}

function verifierPolicy(ifaces: string[]): string {
  return `# the server's policy: on port ${MARKED_PORT}, drop SYNs without a valid token
apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: guard}
spec:
  interfaces: {names: [${ifaces.join(', ')}]}
  token: {mode: Keyed, secretRef: {name: demo-key}, epochSeconds: ${EPOCH_SECONDS}}
  option: {kind: ${KIND}, experimentId: 0x${EXID.toString(16)}}
  ingress: {action: Enforce, ports: [${MARKED_PORT}]}
---
${keySecret('demo-key', KEY)}`;
}

/** The intruder's attempt: put a token copied from someone else's SYN on its own SYNs. */
function replayPolicy(iface: string, stolen: Buffer): string {
  return `# the intruder's policy: copy the client's token value onto every SYN to port ${MARKED_PORT}
apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: copycat}
spec:
  interfaces: {names: [${iface}]}
  token: {mode: Static, secretRef: {name: stolen}}
  option: {kind: ${KIND}, experimentId: 0x${EXID.toString(16)}}
  egress: {destinations: [{cidr: 203.0.113.0/24, ports: [${MARKED_PORT}]}]}
---
${keySecret('stolen', stolen)}`;
}

function keySecret(name: string, value: Buffer): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}}
type: Opaque
data: {current: ${value.toString('base64')}}
`;
}

const SERVER = `
const net = require('node:net');
const addrs = JSON.parse(process.argv[1]);
let listening = 0;
for (const [host, port] of addrs) {
  net.createServer((s) => { s.on('error', () => {}); s.end('hello from the server\\n'); })
    .listen({ host, port, ipv6Only: host.includes(':') }, () => { if (++listening === addrs.length) process.stdout.write('ready\\n'); });
}
`;

const CLIENT = `
const net = require('node:net');
const [host, port, timeout] = JSON.parse(process.argv[1]);
const t0 = process.hrtime.bigint();
const s = net.connect({ host, port, timeout });
s.once('connect', () => { s.destroy(); console.log(JSON.stringify({ ok: true, ms: Number(process.hrtime.bigint() - t0) / 1e6, localPort: s.localPort })); });
s.once('timeout', () => { s.destroy(); console.log(JSON.stringify({ ok: false, error: 'timeout' })); });
s.once('error', (e) => console.log(JSON.stringify({ ok: false, error: e.code })));
`;

/**
 * Blocks until no agent holds the state directory (its process has ended: the kernel drops the
 * lock then), at most `ms`; false if one still does. For the synchronous cleanup.
 */
function waitAgentGone(stateDir: string, ms: number): boolean {
  const until = Date.now() + ms;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const r = tryLockDir(stateDir);
    if (r === null || 'release' in r) {
      r?.release();
      return true;
    }
    if (Date.now() >= until) return false;
    Atomics.wait(nap, 0, 0, 50);
  }
}

/** Polls a check of the demo's own state every 100 ms until it holds. */
const waitFor = async (what: string, ms: number, check: () => boolean): Promise<void> => {
  await waitUntil(what, ms, () => check() || undefined, { everyMs: 100 });
};

export async function runDemo(opts: { keep: boolean }): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('netoken demo: run as root (it loads BPF programs and makes network namespaces)\n');
    return 2;
  }
  const id = `${process.pid % 100000}`;
  const nsC = `ntdemo-${id}-client`;
  const nsS = `ntdemo-${id}-server`;
  const nsI = `ntdemo-${id}-intruder`;
  const vC = `ntdc${id}`;
  const vS = `ntds${id}`;
  const vI = `ntdi${id}`;
  const vSI = `ntdj${id}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-demo-'));
  const agents = {
    client: { ns: nsC, stateDir: `/sys/fs/bpf/netoken-demo-${id}-client`, runDir: path.join(dir, 'run-client') },
    server: { ns: nsS, stateDir: `/sys/fs/bpf/netoken-demo-${id}-server`, runDir: path.join(dir, 'run-server') },
    intruder: { ns: nsI, stateDir: `/sys/fs/bpf/netoken-demo-${id}-intruder`, runDir: path.join(dir, 'run-intruder') },
  };
  const children: ChildProcess[] = [];
  let cleaned = false;

  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    // detach refuses while an agent still holds its state directory: wait for them to end.
    const states = Object.values(agents).map((a) => a.stateDir);
    if (!states.every((d) => waitAgentGone(d, 10_000))) {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      for (const d of states) waitAgentGone(d, 5_000);
    }
    if (opts.keep) {
      say(
        `\nleft in place (--keep): namespaces ${nsC} ${nsS} ${nsI}, pins ${Object.values(agents)
          .map((a) => a.stateDir)
          .join(' ')}, files ${dir}`,
      );
      return;
    }
    for (const a of Object.values(agents)) {
      try {
        sh('nsenter', [
          `--net=/var/run/netns/${a.ns}`,
          '--',
          process.execPath,
          bin,
          'detach',
          '--state-dir',
          a.stateDir,
          '--run-dir',
          a.runDir,
          '--log-level',
          'error',
        ]);
      } catch {
        // the namespaces going away removes the hooks with their interfaces anyway
      }
    }
    for (const ns of [nsC, nsS, nsI]) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
    for (const a of Object.values(agents)) rmSync(a.stateDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const inNs = (ns: string, cmd: string, args: string[]): string => sh('ip', ['netns', 'exec', ns, cmd, ...args]);
  const spawnIn = (ns: string, args: string[]): ChildProcess => {
    const c = spawn('nsenter', [`--net=/var/run/netns/${ns}`, '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(c);
    return c;
  };
  const startAgent = async (who: keyof typeof agents, policy: string): Promise<void> => {
    const a = agents[who];
    const policyFile = path.join(dir, `${who}-policy.yaml`);
    writeFileSync(policyFile, policy, { mode: 0o600 });
    say(`\n${who} policy (${policyFile}):`);
    // Key material stays in the 0600 file; the screen shows only its size.
    const shown = policy.replace(
      /(current|previous): ([A-Za-z0-9+/=]+)/g,
      (_m, k: string, v: string) => `${k}: <${Buffer.from(v, 'base64').length} bytes, in ${path.basename(policyFile)}>`,
    );
    for (const l of shown.split('\n').filter((x) => x && !x.startsWith('#'))) say(`  ${l}`);
    const log: string[] = [];
    const agent = spawnIn(a.ns, [
      process.execPath,
      bin,
      'agent',
      '--policy-file',
      policyFile,
      '--state-dir',
      a.stateDir,
      '--run-dir',
      a.runDir,
      '--log-format',
      'text',
    ]);
    agent.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
    const statusFile = path.join(a.runDir, 'status.json');
    await waitFor(`the ${who} agent to attach`, 20000, () => {
      if (agent.exitCode !== null) throw new Error(`the ${who} agent exited (${agent.exitCode}):\n${log.join('')}`);
      if (!existsSync(statusFile)) return false;
      const st = JSON.parse(readFileSync(statusFile, 'utf8')) as { hooks: unknown[] };
      return st.hooks.length > 0;
    });
    say(`starting the agent in the ${who} namespace`);
    for (const l of log
      .join('')
      .split('\n')
      .filter((x) => /attached|applied/.test(x)))
      say(`  ${l.replace(/^\S+\s+/, '')}`);
  };
  const connectFrom = (ns: string, host: string, port: number, timeoutMs: number): { ok: boolean; ms?: number; error?: string } =>
    JSON.parse(
      sh('nsenter', [
        `--net=/var/run/netns/${ns}`,
        '--',
        process.execPath,
        '-e',
        CLIENT,
        JSON.stringify([host, port, timeoutMs]),
      ]),
    ) as { ok: boolean; ms?: number; error?: string };
  const target = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

  try {
    say('netoken demo: a client, an intruder and a server in network namespaces, veth pairs, transmit checksum offload off');
    for (const ns of [nsC, nsS, nsI]) sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', vC, 'netns', nsC, 'type', 'veth', 'peer', 'name', vS, 'netns', nsS]);
    sh('ip', ['link', 'add', vI, 'netns', nsI, 'type', 'veth', 'peer', 'name', vSI, 'netns', nsS]);
    const ends: [string, string, string, string | null][] = [
      [nsC, vC, '198.51.100.1/24', '2001:db8:100::1/64'],
      [nsS, vS, '198.51.100.2/24', '2001:db8:100::2/64'],
      [nsI, vI, '203.0.113.1/24', null],
      [nsS, vSI, '203.0.113.2/24', null],
    ];
    for (const [ns, dev, v4, v6] of ends) {
      inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
      // No duplicate-address detection: a fresh link-local address would delay the first IPv6 SYN.
      inNs(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
      inNs(ns, 'ip', ['addr', 'add', v4, 'dev', dev]);
      if (v6) inNs(ns, 'ip', ['-6', 'addr', 'add', v6, 'dev', dev, 'nodad']);
      inNs(ns, 'ip', ['link', 'set', dev, 'up']);
      inNs(ns, 'ethtool', ['-K', dev, 'tx', 'off']);
    }
    say(`  client   ${nsC}: ${vC} 198.51.100.1, 2001:db8:100::1`);
    say(`  server   ${nsS}: ${vS} 198.51.100.2, 2001:db8:100::2; ${vSI} 203.0.113.2`);
    say(`  intruder ${nsI}: ${vI} 203.0.113.1`);

    await startAgent('server', verifierPolicy([vS, vSI]));
    await startAgent('client', markerPolicy(vC));

    const pcapFile = path.join(dir, 'server.pcap');
    const dump = spawnIn(nsS, ['tcpdump', '-i', vS, '-U', '-n', '--immediate-mode', '-w', pcapFile, 'tcp']);
    let dumpErr = '';
    dump.stderr?.on('data', (d: Buffer) => (dumpErr += d.toString()));
    await waitFor('tcpdump to listen', 10000, () => /listening on/.test(dumpErr));

    const listen: [string, number][] = [
      ['198.51.100.2', MARKED_PORT],
      ['198.51.100.2', UNMARKED_PORT],
      ['2001:db8:100::2', MARKED_PORT],
      ['203.0.113.2', MARKED_PORT],
      ['203.0.113.2', UNMARKED_PORT],
    ];
    const server = spawnIn(nsS, [process.execPath, '-e', SERVER, JSON.stringify(listen)]);
    let serverOut = '';
    server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
    await waitFor('the server to listen', 10000, () => serverOut.includes('ready'));

    const results: { who: string; target: string; ok: boolean; want: boolean }[] = [];
    const attempt = (who: string, ns: string, host: string, port: number, want: boolean): void => {
      const r = connectFrom(ns, host, port, want ? 3000 : 1500);
      const t = target(host, port);
      results.push({ who, target: t, ok: r.ok, want });
      const verdict = r.ok ? `connected in ${r.ms?.toFixed(1)} ms` : `no connection (${r.error})`;
      say(`  ${who.padEnd(9)} -> ${t.padEnd(24)} ${verdict}${r.ok === want ? '' : '   <-- UNEXPECTED'}`);
    };

    say('\nthe client connects (its SYNs to the server carry a keyed token)');
    for (const [host, port] of listen.slice(0, 3)) attempt('client', nsC, host, port, true);
    await sleep(300);
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));

    say('\nSYNs as the server received them (after the verifier passed them)');
    const cap = parsePcap(readFileSync(pcapFile));
    let marked = 0;
    let bad = 0;
    let stolen: Buffer | null = null;
    for (const pkt of cap.packets) {
      const p = parseFrame(toEthernet(cap.linkType, pkt.data));
      if (!p.tcp || !(p.tcp.flags & TCP_SYN) || p.tcp.flags & TCP_ACK) continue;
      const src = p.family === 6 ? `[${p.src}]:${p.tcp.sport}` : `${p.src}:${p.tcp.sport}`;
      const dst = p.family === 6 ? `[${p.dst}]:${p.tcp.dport}` : `${p.dst}:${p.tcp.dport}`;
      const sums = `${p.family === 4 ? `ip checksum ${p.ipv4ChecksumOk ? 'ok' : 'BAD'}, ` : ''}tcp checksum ${p.tcpChecksumOk ? 'ok' : 'BAD'}`;
      if ((p.family === 4 && !p.ipv4ChecksumOk) || !p.tcpChecksumOk) bad++;
      say(`  ${src} > ${dst}  (${sums})`);
      const names = p.tcp.options.map((o) => optionName(o.kind, o.length));
      say(`    options: ${names.join(', ') || '(none)'}`);
      const value = findTokenOption(p, KIND, EXID);
      if (value) {
        marked++;
        if (p.family === 4 && !stolen) stolen = value;
        say(
          `    netoken: kind ${KIND}, length 12, ExID 0x${EXID.toString(16)}, value ${value.toString('hex')} (SipHash-2-4 of this SYN's addresses, ports, sequence number and epoch)`,
        );
      } else {
        say('    netoken: no token (not covered by the policy; the port is not protected)');
      }
    }

    say('\nthe intruder connects without a token');
    attempt('intruder', nsI, '203.0.113.2', MARKED_PORT, false);
    attempt('intruder', nsI, '203.0.113.2', UNMARKED_PORT, true);
    if (stolen) {
      say(`\nthe intruder copies the client's token (${stolen.toString('hex')}) onto its own SYNs`);
      await startAgent('intruder', replayPolicy(vI, stolen));
      attempt('intruder', nsI, '203.0.113.2', MARKED_PORT, false);
    } else {
      say('\nno token captured to copy: the replay scene is skipped');
    }

    say('\nnetoken status (server namespace)');
    const a = agents.server;
    const status = sh('nsenter', [
      `--net=/var/run/netns/${nsS}`,
      '--',
      process.execPath,
      bin,
      'status',
      '--state-dir',
      a.stateDir,
      '--run-dir',
      a.runDir,
    ]);
    for (const l of status.split('\n')) say(`  ${l}`);

    const asExpected = results.every((r) => r.ok === r.want);
    const good = asExpected && bad === 0 && marked === 2 && stolen !== null;
    say(
      good
        ? "result: the client's 3 handshakes completed with 2 verified tokens, every checksum verified on the wire; the intruder got through only to the unprotected port"
        : `result: UNEXPECTED (connections as expected: ${asExpected}, marked SYNs: ${marked}/2, bad checksums: ${bad}, token to copy: ${stolen ? 'yes' : 'no'})`,
    );
    return good ? 0 : 1;
  } catch (err) {
    process.stderr.write(`netoken demo: ${(err as Error).message}\n`);
    return 1;
  } finally {
    cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function optionName(kind: number, length: number): string {
  switch (kind) {
    case 0:
      return 'EOL';
    case 1:
      return 'NOP';
    case 2:
      return 'MSS';
    case 3:
      return 'WScale';
    case 4:
      return 'SACK-permitted';
    case 8:
      return 'Timestamps';
    case 34:
      return 'TFO';
    case 253:
    case 254:
      return `Experimental(${kind}, len ${length})`;
    default:
      return `kind ${kind} (len ${length})`;
  }
}
