/**
 * XDP hooks for the verifier. An XDP program attached over netlink stays on its device
 * without a pin: the run state records where we put one and its program id, and the id (or,
 * with CAP_SYS_ADMIN, the program's name) tells ours from anyone else's. A foreign XDP program
 * is never replaced.
 */
import { binding, type NativeProgram } from '../../native/binding.js';
import { XdpAttached, XdpFlags } from '../../native/bpf.js';
import { hasErrno } from '../../native/errors.js';
import type { Logger } from '../../lib/log.js';
import type { DesiredHook } from '../desired.js';
import type { XdpMode, XdpRecord } from '../run-state.js';
import { type HookContext, type HookStatus, hookBase } from './hook.js';

/** The verifier's XDP program as the kernel names it: how we tell ours from anyone else's. */
export const XDP_PROGRAM_NAME = 'nt_verify_xdp';

export function xdpModeOf(attachMode: number): XdpMode | null {
  if (attachMode === XdpAttached.DRV) return 'xdp-native';
  if (attachMode === XdpAttached.SKB) return 'xdp-generic';
  return null;
}

function xdpFlags(mode: XdpMode): number {
  return mode === 'xdp-native' ? XdpFlags.DRV_MODE : XdpFlags.SKB_MODE;
}

/**
 * Is XDP program `id` the verifier (of this or an earlier run)? The id we recorded when we
 * attached it answers with CAP_BPF alone; the program's name is read only where the agent
 * may look programs up by id (CAP_SYS_ADMIN), e.g. for a record from an older run state.
 */
function isOurXdp(id: number, recorded: XdpRecord | undefined): boolean {
  if (recorded?.progId === id) return true;
  try {
    const p = binding().programFromId(id);
    const name = p.info.name;
    p.close();
    return name === XDP_PROGRAM_NAME;
  } catch {
    return false;
  }
}

function xdpBusy(ifname: string, progId: number): Error {
  const e = new Error(`another XDP program (id ${progId}) is attached to ${ifname}; it is not ours to replace`) as Error & {
    code: string;
  };
  e.code = 'EBUSY';
  return e;
}

/** Put `prog` on the interface at XDP, in the first of `modes` the driver takes; ours already there is swapped in place. */
export function ensureXdp(ctx: HookContext, hook: DesiredHook, prog: NativeProgram, modes: readonly XdpMode[]): HookStatus {
  const b = binding();
  const ifx = String(hook.ifindex);
  const q = b.xdpQuery(hook.ifindex);
  if (q.progId !== 0) {
    if (!isOurXdp(q.progId, ctx.run.xdp[ifx])) throw xdpBusy(hook.name, q.progId);
    const cur = xdpModeOf(q.attachMode);
    if (cur && modes.includes(cur)) {
      if (q.progId !== prog.info.id) {
        // Same mode, no UPDATE_IF_NOEXIST: the kernel swaps the program atomically.
        b.xdpAttach(hook.ifindex, prog.fd, xdpFlags(cur));
        ctx.log.info('hook reused, program replaced', { interface: hook.name, direction: 'ingress', mode: cur });
      }
      ctx.run.xdp[ifx] = { name: hook.name, mode: cur, progId: prog.info.id };
      return { ...hookBase(hook), mode: cur, progId: prog.info.id };
    }
    // Ours, in a mode the preference no longer allows.
    b.xdpDetach(hook.ifindex, cur ? xdpFlags(cur) : 0);
  }
  let last: unknown;
  for (const mode of modes) {
    try {
      // UPDATE_IF_NOEXIST: if someone attached in the meantime, fail rather than replace theirs.
      b.xdpAttach(hook.ifindex, prog.fd, xdpFlags(mode) | XdpFlags.UPDATE_IF_NOEXIST);
      ctx.run.xdp[ifx] = { name: hook.name, mode, progId: prog.info.id };
      ctx.log.info('hook attached', { interface: hook.name, direction: 'ingress', mode });
      return { ...hookBase(hook), mode, progId: prog.info.id };
    } catch (err) {
      last = err;
      ctx.log.debug('XDP attach refused', { interface: hook.name, mode, error: (err as Error).message });
    }
  }
  throw last instanceof Error ? last : new Error(`XDP attach on ${hook.name} failed`);
}

/** Detach the verifier's XDP program from `ifindex` if it is still ours there. */
export function removeXdp(ifindex: number, x: XdpRecord, log: Logger): boolean {
  const b = binding();
  try {
    const q = b.xdpQuery(ifindex);
    if (q.progId === 0 || !isOurXdp(q.progId, x)) return false;
    const mode = xdpModeOf(q.attachMode) ?? x.mode;
    b.xdpDetach(ifindex, xdpFlags(mode));
    log.info('hook removed', { interface: x.name, direction: 'ingress', mode });
    return true;
  } catch (err) {
    if (!hasErrno(err, 'ENODEV'))
      log.warn('removing an XDP program failed', { interface: x.name, error: (err as Error).message });
    return false;
  }
}
