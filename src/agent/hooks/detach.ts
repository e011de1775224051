/**
 * Removing hooks of ours: the ones a new desired state no longer has, and (`netoken
 * detach`, a clean uninstall) every hook and pin of ours, and nothing else.
 */
import { readdirSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../lib/log.js';
import { LAYOUT_VERSION } from '../../lib/abi.js';
import { binding } from '../../native/binding.js';
import { layoutDir } from '../layout.js';
import { readRunState } from '../run-state.js';
import type { AttachMode, HookContext } from './hook.js';
import { removeTcFilter, tcRecords } from './tc.js';
import { removeXdp } from './xdp.js';

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Remove every hook of ours that `realized` does not keep: what each desired hook ended up
 * as (`${ifindex}/${direction}` -> mode), or 'failed' to keep whatever of ours is there.
 */
export function removeStaleHooks(ctx: HookContext, realized: ReadonlyMap<string, AttachMode | 'failed'>): void {
  const b = binding();
  const keeps = (key: string, ...modes: AttachMode[]): boolean => {
    const m = realized.get(key);
    return m === 'failed' || (m !== undefined && modes.includes(m));
  };
  for (const file of safeReaddir(path.join(ctx.stateDir, 'links'))) {
    const m = /^(egress|ingress)-(\d+)$/.exec(file);
    if (!m) continue;
    const key = `${m[2]}/${m[1]}`;
    if (keeps(key, 'tcx')) continue;
    const pin = path.join(ctx.stateDir, 'links', file);
    try {
      const link = ctx.links.get(key) ?? b.linkFromPin(pin);
      link.detach();
      link.close();
    } catch (err) {
      ctx.log.warn('detaching a stale hook failed', { pin, error: (err as Error).message });
    }
    ctx.links.delete(key);
    rmSync(pin, { force: true });
    ctx.log.info('hook removed', { ifindex: Number(m[2]), direction: m[1] });
  }
  for (const direction of ['egress', 'ingress'] as const) {
    const records = tcRecords(ctx.run, direction);
    for (const [ifx, t] of Object.entries(records)) {
      if (keeps(`${ifx}/${direction}`, 'tc')) continue;
      removeTcFilter(Number(ifx), direction, t, ctx.run, ctx.tcPriority, ctx.log);
      delete records[ifx];
    }
  }
  for (const [ifx, x] of Object.entries(ctx.run.xdp)) {
    if (keeps(`${ifx}/ingress`, 'xdp-native', 'xdp-generic')) continue;
    removeXdp(Number(ifx), x, ctx.log);
    delete ctx.run.xdp[ifx];
  }
}

export interface DetachReport {
  links: number;
  tcFilters: number;
  xdp: number;
  pins: number;
}

/**
 * Remove every hook and pin of ours (`netoken detach`), and nothing else: TCX links
 * pinned under stateDir, tc filters and XDP programs recorded in runDir (a qdisc only
 * if we made it, an XDP program only if it is still the verifier), the pinned maps,
 * and the directories.
 */
export function detachAll(stateDir: string, runDir: string, tcPriority: number, log: Logger): DetachReport {
  const report: DetachReport = { links: 0, tcFilters: 0, xdp: 0, pins: 0 };
  const b = binding();
  for (const file of safeReaddir(path.join(stateDir, 'links'))) {
    const pin = path.join(stateDir, 'links', file);
    try {
      const link = b.linkFromPin(pin);
      link.detach();
      link.close();
      report.links++;
    } catch (err) {
      log.warn('detaching a pinned link failed', { pin, error: (err as Error).message });
    }
    rmSync(pin, { force: true });
    report.pins++;
  }
  const run = readRunState(runDir);
  for (const direction of ['egress', 'ingress'] as const) {
    const records = tcRecords(run, direction);
    for (const [ifx, t] of Object.entries(records)) {
      removeTcFilter(Number(ifx), direction, t, run, tcPriority, log);
      delete records[ifx];
      report.tcFilters++;
    }
  }
  for (const [ifx, x] of Object.entries(run.xdp)) {
    if (removeXdp(Number(ifx), x, log)) report.xdp++;
  }
  // The maps of every layout: this agent's and older ones (layout.ts), newest first.
  const mapDirs: string[] = [];
  for (let v = LAYOUT_VERSION; v >= 1; v--) mapDirs.push(layoutDir(stateDir, v));
  for (const dir of mapDirs) {
    for (const file of safeReaddir(dir)) {
      const pin = path.join(dir, file);
      if (mapDirs.includes(pin)) continue;
      rmSync(pin, { force: true });
      report.pins++;
    }
  }
  for (const dir of [path.join(stateDir, 'links'), ...mapDirs, stateDir]) {
    try {
      rmdirSync(dir);
    } catch {
      // not ours to force: a directory someone else put files into stays
    }
  }
  rmSync(path.join(runDir, 'state.json'), { force: true });
  rmSync(path.join(runDir, 'status.json'), { force: true });
  return report;
}
