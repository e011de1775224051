/**
 * `netoken status`: what the agent applied (its status file) with live counters read
 * from the pinned counter map, as a table or JSON. Shows no key material.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { binding } from '../native/binding.js';
import type { AgentStatus } from '../agent/agent.js';
import { readCounterRows } from '../agent/counters.js';
import { layoutDir } from '../agent/layout.js';
import type { CommonConfig } from './config.js';
import { compareText } from '../lib/order.js';

export interface LiveCounter {
  policy: string;
  interface: string;
  counter: string;
  value: string;
}

export interface StatusReport {
  agent: AgentStatus | null;
  counters: LiveCounter[];
  /** pinned hooks that are live in the kernel right now */
  liveHooks: { pin: string; linkId: number; progId: number; ifindex: number }[];
  /** XDP programs on the interfaces where the agent reported an XDP hook, as the kernel has them now */
  liveXdp: { ifindex: number; progId: number }[];
}

export function collectStatus(cfg: CommonConfig): StatusReport {
  const file = path.join(cfg.runDir, 'status.json');
  const agent = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as AgentStatus) : null;
  const report: StatusReport = { agent, counters: [], liveHooks: [], liveXdp: [] };
  const b = binding();
  const byId = new Map((agent?.policies ?? []).filter((p) => p.id).map((p) => [p.id, p.name]));
  const ifName = new Map((agent?.hooks ?? []).map((h) => [h.ifindex, h.name]));
  const maps = layoutDir(cfg.stateDir);
  if (existsSync(path.join(maps, 'nt_counters')) && existsSync(path.join(maps, 'nt_counter_slots'))) {
    const counters = b.mapFromPin(path.join(maps, 'nt_counters'));
    const owners = b.mapFromPin(path.join(maps, 'nt_counter_slots'));
    try {
      for (const r of readCounterRows(counters, owners)) {
        report.counters.push({
          policy: r.policyId === 0 ? '-' : (byId.get(r.policyId) ?? `#${r.policyId}`),
          interface: ifName.get(r.ifindex) ?? `if${r.ifindex}`,
          counter: r.counter,
          value: r.value.toString(),
        });
      }
    } finally {
      counters.close();
      owners.close();
    }
  }
  report.counters.sort(
    (a, b2) => compareText(a.policy, b2.policy) || compareText(a.interface, b2.interface) || compareText(a.counter, b2.counter),
  );
  const linksDir = path.join(cfg.stateDir, 'links');
  if (existsSync(linksDir)) {
    for (const f of readdirSafe(linksDir)) {
      try {
        const l = b.linkFromPin(path.join(linksDir, f));
        const i = l.info();
        report.liveHooks.push({ pin: f, linkId: i.id, progId: i.progId, ifindex: i.ifindex });
        l.close();
      } catch {
        // a pin that cannot be opened is shown as missing by its absence
      }
    }
  }
  for (const h of agent?.hooks ?? []) {
    if (h.mode !== 'xdp-native' && h.mode !== 'xdp-generic') continue;
    try {
      report.liveXdp.push({ ifindex: h.ifindex, progId: b.xdpQuery(h.ifindex).progId });
    } catch {
      // the interface is gone: shown as not live
    }
  }
  return report;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export function formatStatus(r: StatusReport): string {
  let out = '';
  if (!r.agent) {
    out += 'no agent status found (is `netoken agent` running, with the same --run-dir?)\n';
  } else {
    const a = r.agent;
    out += `agent: ${a.ready ? 'ready' : 'NOT READY'}   program id ${a.programId}   updated ${a.updatedAt}   reconciles ${a.reconciles}\n\n`;
    out += 'HOOKS\n';
    const hookRows = [['INTERFACE', 'IFINDEX', 'DIRECTION', 'MODE', 'PROGRAM', 'LINK', 'LIVE', 'UNREADABLE', 'POLICIES']];
    const unreadable = (ifname: string): string =>
      r.counters
        .filter((c) => c.policy === '-' && c.interface === ifname && c.counter === 'unreadable')
        .reduce((n, c) => n + BigInt(c.value), 0n)
        .toString();
    for (const h of a.hooks) {
      let live = '-';
      if (h.mode === 'tcx') live = r.liveHooks.some((l) => l.linkId === h.linkId) ? 'yes' : 'NO';
      else if (h.mode === 'xdp-native' || h.mode === 'xdp-generic')
        live = r.liveXdp.some((x) => x.ifindex === h.ifindex && x.progId === h.progId) ? 'yes' : 'NO';
      hookRows.push([
        h.name,
        String(h.ifindex),
        h.direction,
        h.mode,
        String(h.progId),
        h.linkId ? String(h.linkId) : '-',
        live,
        unreadable(h.name),
        h.policies.join(','),
      ]);
    }
    for (const e of a.hookErrors) {
      hookRows.push([
        e.name,
        String(e.ifindex),
        e.direction,
        e.reason === 'UnsupportedDevice' ? 'REFUSED' : 'FAILED',
        '-',
        '-',
        '-',
        '-',
        e.message,
      ]);
    }
    out += table(hookRows) + '\n';
    out += 'POLICIES\n';
    const polRows = [
      ['NAME', 'GENERATION', 'SELECTED', 'INTERFACES', 'MARKED', 'VALID', 'MISSING', 'INVALID', 'DROPPED', 'PROBLEMS'],
    ];
    const sum = (policy: string, counter: string): string =>
      r.counters
        .filter((c) => c.policy === policy && c.counter === counter)
        .reduce((n, c) => n + BigInt(c.value), 0n)
        .toString();
    for (const p of a.policies) {
      const problems = [...p.errors, ...p.warnings].map((e) => `${e.reason}: ${e.message}`).join('; ');
      polRows.push([
        p.name,
        String(p.generation),
        p.selected ? 'yes' : 'no',
        p.interfaces.join(',') || '-',
        sum(p.name, 'marked'),
        sum(p.name, 'verify_valid'),
        sum(p.name, 'verify_missing'),
        sum(p.name, 'verify_invalid'),
        sum(p.name, 'verify_dropped'),
        problems || '-',
      ]);
    }
    out += table(polRows);
    if (a.documentErrors.length) {
      out += '\nREJECTED INPUT\n';
      for (const e of a.documentErrors) out += `${e.where}: ${e.message}\n`;
    }
  }
  out += '\nCOUNTERS\n';
  if (r.counters.length === 0) out += '(none yet)\n';
  else
    out += table([
      ['POLICY', 'INTERFACE', 'COUNTER', 'VALUE'],
      ...r.counters.map((c) => [c.policy, c.interface, c.counter, c.value]),
    ]);
  return out;
}

export function printStatus(cfg: CommonConfig, output: 'table' | 'json'): number {
  const r = collectStatus(cfg);
  process.stdout.write(output === 'json' ? JSON.stringify(r, null, 2) + '\n' : formatStatus(r));
  return r.agent ? 0 : 1;
}
