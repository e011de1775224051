/**
 * What /proc says about a process: its resident memory, its CPU time, and the node process
 * behind an nsenter. Light on purpose: rss-probe.ts loads it into the process it measures.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** Clock ticks per second, the unit of the CPU times in /proc/PID/stat. */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime+stime of the process and of its waited-for children (the agent runs `ip`), in clock ticks. */
export function cpuTicks(pid: number): { self: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  // Fields 14-17 of proc(5) (utime, stime, cutime, cstime); f[0] is field 3.
  return { self: (f[11] ?? 0) + (f[12] ?? 0), children: (f[13] ?? 0) + (f[14] ?? 0) };
}

/** VmRSS of a process (or of this one), MiB. */
export function rssMiB(pid: number | 'self'): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) / 1024;
}

/** The node process behind a pid that nsenter may still be (nsenter execs it; a fork would leave it a child). */
export function nodePid(pid: number): number {
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (comm !== 'nsenter') return pid;
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  if (!children[0]) throw new Error(`process ${pid} (nsenter) has no child`);
  return children[0];
}
