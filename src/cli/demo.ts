/**
 * `netoken demo` (npm run demo): two network namespaces joined by a veth pair with
 * transmit checksum offload off, the agent on the client side with an embedded policy,
 * real TCP connections, and the SYNs as the server received them, decoded.
 * Everything it makes is removed at the end, also on Ctrl-C.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../lib/packet.js';
import { parsePcap, toEthernet } from '../lib/pcap.js';

const TOKEN = Buffer.from('NToken!!', 'ascii');
const KIND = 253;
const EXID = 0x4e54;
const MARKED_PORT = 8080;
const UNMARKED_PORT = 9090;

const bin = fileURLToPath(new URL('../../../bin/netoken.js', import.meta.url));

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function say(line = ''): void {
  process.stdout.write(line + '\n');
}

function embeddedPolicy(iface: string): string {
  return `# the demo's embedded policy: mark SYNs to the server on port ${MARKED_PORT} (IPv4) and every port (IPv6)
apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: demo}
spec:
  interfaces: {names: [${iface}]}
  token: {mode: Static, secretRef: {name: demo-token}}
  option: {kind: ${KIND}, experimentId: 0x${EXID.toString(16)}}
  egress:
    destinations:
      - {cidr: 198.51.100.0/24, ports: [${MARKED_PORT}]}
      - {cidr: "2001:db8:100::/64"}
---
apiVersion: v1
kind: Secret
metadata: {name: demo-token}
type: Opaque
data: {current: ${TOKEN.toString('base64')}}
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
const [host, port] = JSON.parse(process.argv[1]);
const t0 = process.hrtime.bigint();
const s = net.connect({ host, port, timeout: 3000 });
s.once('connect', () => { s.destroy(); console.log(JSON.stringify({ ok: true, ms: Number(process.hrtime.bigint() - t0) / 1e6, localPort: s.localPort })); });
s.once('timeout', () => { s.destroy(); console.log(JSON.stringify({ ok: false, error: 'timeout' })); });
s.once('error', (e) => console.log(JSON.stringify({ ok: false, error: e.code })));
`;

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

export async function runDemo(opts: { keep: boolean }): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('netoken demo: run as root (it loads BPF programs and makes network namespaces)\n');
    return 2;
  }
  const id = `${process.pid % 100000}`;
  const nsC = `ntdemo-${id}-client`;
  const nsS = `ntdemo-${id}-server`;
  const vC = `ntdc${id}`;
  const vS = `ntds${id}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-demo-'));
  const stateDir = `/sys/fs/bpf/netoken-demo-${id}`;
  const runDir = path.join(dir, 'run');
  const children: ChildProcess[] = [];
  let cleaned = false;

  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    if (opts.keep) {
      say(`\nleft in place (--keep): namespaces ${nsC} ${nsS}, pins ${stateDir}, files ${dir}`);
      return;
    }
    try {
      sh('nsenter', [`--net=/var/run/netns/${nsC}`, '--', process.execPath, bin, 'detach', '--state-dir', stateDir, '--run-dir', runDir, '--log-level', 'error']);
    } catch {
      // the namespaces going away removes the hooks with their interfaces anyway
    }
    for (const ns of [nsC, nsS]) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
    rmSync(stateDir, { recursive: true, force: true });
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

  try {
    say('netoken demo: two network namespaces joined by a veth pair, transmit checksum offload off');
    sh('ip', ['netns', 'add', nsC]);
    sh('ip', ['netns', 'add', nsS]);
    sh('ip', ['link', 'add', vC, 'netns', nsC, 'type', 'veth', 'peer', 'name', vS, 'netns', nsS]);
    for (const [ns, dev, v4, v6] of [[nsC, vC, '198.51.100.1/24', '2001:db8:100::1/64'], [nsS, vS, '198.51.100.2/24', '2001:db8:100::2/64']] as const) {
      inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
      // No duplicate-address detection: a fresh link-local address would delay the first IPv6 SYN.
      inNs(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
      inNs(ns, 'ip', ['addr', 'add', v4, 'dev', dev]);
      inNs(ns, 'ip', ['-6', 'addr', 'add', v6, 'dev', dev, 'nodad']);
      inNs(ns, 'ip', ['link', 'set', dev, 'up']);
      inNs(ns, 'ethtool', ['-K', dev, 'tx', 'off']);
    }
    say(`  client ${nsC}: ${vC} 198.51.100.1, 2001:db8:100::1`);
    say(`  server ${nsS}: ${vS} 198.51.100.2, 2001:db8:100::2`);

    const policyFile = path.join(dir, 'policy.yaml');
    writeFileSync(policyFile, embeddedPolicy(vC), { mode: 0o600 });
    say(`\nembedded policy (${policyFile}):`);
    for (const l of embeddedPolicy(vC).split('\n').filter((x) => x && !x.startsWith('#'))) say(`  ${l}`);

    say('\nstarting the agent in the client namespace');
    const agentLog: string[] = [];
    const agent = spawnIn(nsC, [process.execPath, bin, 'agent', '--policy-file', policyFile, '--state-dir', stateDir, '--run-dir', runDir, '--log-format', 'text']);
    agent.stderr?.on('data', (d: Buffer) => agentLog.push(d.toString()));
    const statusFile = path.join(runDir, 'status.json');
    await waitFor('the agent to attach', 20000, () => {
      if (agent.exitCode !== null) throw new Error(`the agent exited (${agent.exitCode}):\n${agentLog.join('')}`);
      if (!existsSync(statusFile)) return false;
      const s = JSON.parse(readFileSync(statusFile, 'utf8')) as { hooks: unknown[] };
      return s.hooks.length > 0;
    });
    for (const l of agentLog.join('').split('\n').filter((x) => /attached|applied/.test(x))) say(`  ${l.replace(/^\S+\s+/, '')}`);

    const pcapFile = path.join(dir, 'server.pcap');
    const dump = spawnIn(nsS, ['tcpdump', '-i', vS, '-U', '-n', '--immediate-mode', '-w', pcapFile, 'tcp']);
    let dumpErr = '';
    dump.stderr?.on('data', (d: Buffer) => (dumpErr += d.toString()));
    await waitFor('tcpdump to listen', 10000, () => /listening on/.test(dumpErr));

    const listen: [string, number][] = [['198.51.100.2', MARKED_PORT], ['198.51.100.2', UNMARKED_PORT], ['2001:db8:100::2', MARKED_PORT]];
    const server = spawnIn(nsS, [process.execPath, '-e', SERVER, JSON.stringify(listen)]);
    let serverOut = '';
    server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
    await waitFor('the server to listen', 10000, () => serverOut.includes('ready'));

    say('\nconnecting from the client');
    const results: { target: string; ok: boolean; localPort?: number; error?: string }[] = [];
    for (const [host, port] of listen) {
      const out = sh('nsenter', [`--net=/var/run/netns/${nsC}`, '--', process.execPath, '-e', CLIENT, JSON.stringify([host, port])]);
      const r = JSON.parse(out) as { ok: boolean; ms?: number; localPort?: number; error?: string };
      const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      results.push({ target, ...r });
      say(`  ${target.padEnd(24)} ${r.ok ? `connected in ${r.ms?.toFixed(1)} ms` : `FAILED (${r.error})`}`);
    }
    await new Promise((r) => setTimeout(r, 300));
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));

    say('\nSYNs as the server received them');
    const cap = parsePcap(readFileSync(pcapFile));
    let marked = 0;
    let bad = 0;
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
        say(`    netoken: kind ${KIND}, length 12, ExID 0x${EXID.toString(16)}, value ${value.toString('hex')} ("${value.toString('latin1')}")`);
      } else {
        say('    netoken: no token (not covered by the policy)');
      }
    }

    say('\nnetoken status (client namespace)');
    const status = sh('nsenter', [`--net=/var/run/netns/${nsC}`, '--', process.execPath, bin, 'status', '--state-dir', stateDir, '--run-dir', runDir]);
    for (const l of status.split('\n')) say(`  ${l}`);

    const allOk = results.every((r) => r.ok);
    say(allOk && bad === 0 && marked === 2
      ? 'result: 3 handshakes completed, 2 SYNs carried the token, every checksum verified on the wire'
      : `result: UNEXPECTED (connections ok: ${allOk}, marked SYNs: ${marked}/2, bad checksums: ${bad})`);
    return allOk && bad === 0 && marked === 2 ? 0 : 1;
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
    case 0: return 'EOL';
    case 1: return 'NOP';
    case 2: return 'MSS';
    case 3: return 'WScale';
    case 4: return 'SACK-permitted';
    case 8: return 'Timestamps';
    case 34: return 'TFO';
    case 253: case 254: return `Experimental(${kind}, len ${length})`;
    default: return `kind ${kind} (len ${length})`;
  }
}
