/**
 * kubectl apply → token on the wire, kubectl delete → hook gone: the real operator and a
 * cluster-mode agent (session.ts), a connection loop on the node sending a SYN every 5 ms, tcpdump
 * at the peer and a 2 ms poll of the node's egress hooks.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { parsePcap, toEthernet } from '../../src/lib/pcap.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { spawnIn, waitForExit } from '../../test/lib/netns.js';
import { figure, percentile, type Figure, type FigureSpec } from '../report.js';
import { EXID, Events, GROUP, KIND, now } from './common.js';
import { NODE_SELECTOR, policyYaml, secretYaml, type Session } from './session.js';

/** The port the SYNs of the apply → wire rows go to; nothing listens there, so each attempt is one SYN and an RST. */
const WIRE_PORT = 7443;
/** The budget: kubectl apply → token on the wire, p99 ≤ 2 s. */
const APPLY_BUDGET_MS = 2000;
const HOOK_WATCH = fileURLToPath(new URL('./hook-watch.js', import.meta.url));
/** The connection loop (syn-loop.ts): node syn-loop.js <host> <port> <everyMs>. */
export const SYN_LOOP = fileURLToPath(new URL('./syn-loop.js', import.meta.url));

/** SYNs seen at the peer, from tcpdump writing pcap to a pipe; the timestamps are the capture's. */
export class SynCapture {
  readonly events = new Events<{ atMs: number; token: Buffer | null }>();
  syns = 0;
  marked = 0;
  private header: Buffer | null = null;
  private pending = Buffer.alloc(0);
  private stderr = '';

  private constructor(private readonly child: ChildProcess) {}

  static async start(ns: string, dev: string, port: number): Promise<SynCapture> {
    const filter = `tcp dst port ${port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`;
    const child = spawnIn(ns, 'tcpdump', [
      '-i',
      dev,
      '-U',
      '-w',
      '-',
      '-n',
      '--immediate-mode',
      '-s',
      '256',
      '--time-stamp-precision=nano',
      filter,
    ]);
    const c = new SynCapture(child);
    child.stdout?.on('data', (d: Buffer) => c.feed(d));
    child.stderr?.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump in ${ns} did not start: ${c.stderr.trim()}`)), 10_000);
      child.stderr?.on('data', (d: string) => {
        c.stderr += d;
        if (c.stderr.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump in ${ns} exited (${code}): ${c.stderr.trim()}`));
      });
    }).catch(async (err: unknown) => {
      await c.stop();
      throw err;
    });
    return c;
  }

  private feed(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    if (!this.header) {
      if (this.pending.length < 24) return;
      this.header = this.pending.subarray(0, 24);
      this.pending = this.pending.subarray(24);
    }
    const pcap = parsePcap(Buffer.concat([this.header, this.pending]));
    let used = 0;
    for (const p of pcap.packets) {
      used += 16 + p.data.length;
      const f = parseFrame(toEthernet(pcap.linkType, p.data));
      if (!f.tcp || !(f.tcp.flags & TCP_SYN) || f.tcp.flags & TCP_ACK) continue;
      const token = findTokenOption(f, KIND, EXID);
      this.syns++;
      if (token) this.marked++;
      this.events.push({ atMs: p.tsSec * 1000 + p.tsNsec / 1e6, token });
    }
    this.pending = Buffer.from(this.pending.subarray(used));
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    if (!(await waitForExit(this.child, 5000))) {
      this.child.kill('SIGKILL');
      await waitForExit(this.child, 5000);
    }
  }
}

/** Polls the kernel's egress hooks of one interface every few ms and reports each change with its time. */
class HookWatch {
  readonly events = new Events<{ t: number; attached: boolean }>();
  private constructor(private readonly child: ChildProcess) {}

  static start(ns: string, ifindex: number, everyMs = 2): HookWatch {
    const child = spawnIn(ns, process.execPath, [HOOK_WATCH, String(ifindex), String(everyMs)]);
    const w = new HookWatch(child);
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const e = JSON.parse(line) as { t: number; tcx: number[]; tc: number | null };
        w.events.push({ t: e.t, attached: e.tcx.length > 0 || e.tc !== null });
      }
    });
    return w;
  }

  async stop(): Promise<void> {
    this.child.kill('SIGKILL');
    await waitForExit(this.child, 5000);
  }
}

export interface WireResult {
  /** kubectl apply → the first SYN with the new policy's token at the peer, per apply */
  applyMs: number[];
  /** kubectl delete → no hook of ours on the interface, per delete */
  deleteMs: number[];
  /** SYNs the peer captured, and how many of them carried a token */
  syns: number;
  marked: number;
}

/** kubectl apply of a fresh policy → the first SYN with its token at the peer; kubectl delete → no hook on the interface. */
export async function applyToWire(s: Session, applies: number, log: (line: string) => void): Promise<WireResult> {
  const t = s.t;
  const tokens = Array.from({ length: applies }, () => s.token());
  // Each policy has its own Secret with its own token, made beforehand: the apply is the policy alone.
  await s.c.apply(tokens.map((tok, i) => secretYaml(`cp-wire-${i}-token`, tok)).join('---\n'));
  await sleep(1000);
  const capture = await SynCapture.start(t.server.ns, t.server.dev, WIRE_PORT);
  const hooks = HookWatch.start(t.client.ns, t.client.ifindex);
  // A SYN every 5 ms: the time a token first appears is known to about that much.
  const loop = spawnIn(t.client.ns, process.execPath, [SYN_LOOP, t.server.ipv4, String(WIRE_PORT), '5']);
  const applyMs: number[] = [];
  const deleteMs: number[] = [];
  try {
    await capture.events.waitFor(() => true, 10_000, 'the first SYN of the connection loop at the peer');
    for (let i = 0; i < applies; i++) {
      const name = `cp-wire-${i}`;
      const token = tokens[i] as Buffer;
      const t0 = now();
      const marked = capture.events.waitFor(
        (e) => e.atMs >= t0 && e.token !== null && e.token.equals(token),
        30_000,
        `a SYN with ${name}'s token`,
        s.context,
      );
      await s.c.apply(policyYaml(name, 'wire', t.client.dev, `${name}-token`, `${t.server.ipv4}/32`, WIRE_PORT, NODE_SELECTOR));
      applyMs.push((await marked).atMs - t0);
      const t1 = now();
      const gone = hooks.events.waitFor(
        (e) => e.t >= t1 && !e.attached,
        30_000,
        `the hook to leave ${t.client.dev} after deleting ${name}`,
        s.context,
      );
      await s.c.kubectlOk(['delete', 'tokenpolicy', name, '--wait=false']);
      deleteMs.push((await gone).t - t1);
      log(
        `control plane: apply ${i + 1}/${applies}: on the wire after ${Math.round(applyMs.at(-1) ?? 0)} ms, hook gone ${Math.round(deleteMs.at(-1) ?? 0)} ms after delete`,
      );
    }
  } finally {
    loop.kill('SIGKILL');
    await waitForExit(loop, 5000);
    await hooks.stop();
    await capture.stop();
  }
  // The finalizers of the deleted policies go once the node has reported them gone.
  await waitUntil(
    'the deleted policies to be released',
    60_000,
    async () => {
      const r = await s.c.kubectlOk(['get', 'tokenpolicies', '-l', 'netoken-bench=wire', '-o', 'name']);
      return r.trim() === '' ? true : undefined;
    },
    { everyMs: 300, context: s.context },
  );
  return { applyMs, deleteMs, syns: capture.syns, marked: capture.marked };
}

/** Two rows for one benchmark: the p50 and the p99 of its samples; `p99Budget` holds the p99 to a budget. */
function p50p99(
  benchmark: string,
  samples: number[],
  of: string,
  note: string,
  p99Budget?: Pick<FigureSpec, 'baseline' | 'target'>,
): Figure[] {
  return [
    figure({ group: GROUP, benchmark, config: `p50 of ${of}`, unit: 'ms', runs: [percentile(samples, 0.5)], note }),
    figure({
      group: GROUP,
      benchmark,
      config: `p99 of ${of}`,
      unit: 'ms',
      runs: [percentile(samples, 0.99)],
      ...p99Budget,
      note,
    }),
  ];
}

/** The rows: p50 and p99 of apply → wire (p99 against the budget) and of delete → hook gone. */
export function wireFigures(wire: WireResult): { figures: Figure[]; remarks: string[] } {
  const n = wire.applyMs.length;
  const wireNote =
    `From the start of \`kubectl apply\` (a new TokenPolicy with its own pre-made Secret and token, every sample) to the capture time of the first SYN at the peer that carries that token; ` +
    `the real operator and a cluster-mode agent (chart RBAC) against a test kube-apiserver, the node's connection loop sending a SYN every 5 ms. Percentiles are nearest-rank (p99 of ${n} samples is the largest).`;
  const deleteNote =
    'From the start of `kubectl delete` to the moment a 2 ms poll of the interface (TCX and tc) finds no hook of ours; each delete removes the only policy on the node.';
  const figures = [
    ...p50p99('kubectl apply → token on the wire', wire.applyMs, `${n} applies`, wireNote, {
      baseline: { benchmark: 'budget', value: APPLY_BUDGET_MS },
      target: { kind: 'at most', ratio: 1 },
    }),
    ...p50p99('kubectl delete → hook gone from the interface', wire.deleteMs, `${n} deletes`, deleteNote),
  ];
  const remarks = [
    `control plane: ${n} applies sent ${wire.syns} SYNs to the peer, ${wire.marked} of them marked; no token of the run appeared in the agent's or the operator's output.`,
  ];
  return { figures, remarks };
}
