/**
 * tc hooks: a pinned TCX link where the kernel has TCX (6.6+), else a filter of ours in
 * the interface's clsact qdisc (made if missing, and then removed with our last filter).
 */
import { existsSync, unlinkSync } from 'node:fs';
import { binding, type NativeProgram } from '../../native/binding.js';
import { hasErrno } from '../../native/errors.js';
import type { DesiredHook, Direction } from '../desired.js';
import type { RunState, TcRecord } from '../run-state.js';
import { type HookContext, type HookStatus, hookBase, linkPin } from './hook.js';

/** tc filter identity of ours in a clsact qdisc ("NT"). */
export const TC_HANDLE = 0x4e54;

/** egress hooks (and ingress hooks that use tc): TCX, else clsact */
export type AttachPreference = 'auto' | 'tcx' | 'tc';

export function tcRecords(run: Pick<RunState, 'tc' | 'tcIngress'>, direction: Direction): Record<string, TcRecord> {
  return direction === 'egress' ? run.tc : run.tcIngress;
}

/** Attaches programs at tc, remembering whether this kernel has TCX. */
export class TcAttacher {
  private tcxUsable: boolean | undefined;

  constructor(
    private readonly ctx: HookContext,
    private readonly attach: AttachPreference,
  ) {}

  /** A TCX link (pinned), or a clsact filter where the kernel has no TCX, running `prog`. */
  ensure(hook: DesiredHook, prog: NativeProgram): HookStatus {
    const { ctx } = this;
    const key = `${hook.ifindex}/${hook.direction}`;
    const pin = linkPin(ctx.stateDir, hook);
    const b = binding();
    // A pinned TCX link from an earlier run: reuse it, swapping in this program atomically.
    if (existsSync(pin)) {
      const link = ctx.links.get(key) ?? b.linkFromPin(pin);
      const info = link.info();
      if (info.ifindex === hook.ifindex) {
        if (info.progId !== prog.info.id) {
          link.update(prog);
          ctx.log.info('hook reused, program replaced', { interface: hook.name, direction: hook.direction, linkId: info.id });
        }
        ctx.links.set(key, link);
        return { ...hookBase(hook), mode: 'tcx', progId: prog.info.id, linkId: info.id };
      }
      // The interface it was made for is gone (the link is defunct): forget it.
      link.close();
      ctx.links.delete(key);
      unlinkSync(pin);
    }
    if (this.attach !== 'tc' && this.tcxUsable !== false) {
      try {
        const link = b.createTcxLink(prog, hook.ifindex, hook.direction);
        link.pin(pin);
        ctx.links.set(key, link);
        this.tcxUsable = true;
        const info = link.info();
        ctx.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tcx', linkId: info.id });
        return { ...hookBase(hook), mode: 'tcx', progId: prog.info.id, linkId: info.id };
      } catch (err) {
        if (this.attach === 'tcx' || !hasErrno(err, 'EINVAL', 'ENOTSUPP', 'EOPNOTSUPP')) throw err;
        this.tcxUsable = false;
        ctx.log.warn('kernel has no TCX, falling back to a clsact filter', { interface: hook.name });
      }
    }
    const spec = { ifindex: hook.ifindex, direction: hook.direction, handle: TC_HANDLE, priority: ctx.tcPriority };
    const ifx = String(hook.ifindex);
    const records = tcRecords(ctx.run, hook.direction);
    const existing = b.tcQuery(spec);
    let created = records[ifx]?.createdQdisc ?? false;
    if (existing === null) created = b.tcHookCreate(hook.ifindex).created || created;
    if (existing !== prog.info.id) {
      b.tcAttach({ ...spec, progFd: prog.fd, replace: true });
      ctx.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tc', createdQdisc: created });
    }
    records[ifx] = { name: hook.name, createdQdisc: created };
    return { ...hookBase(hook), mode: 'tc', progId: prog.info.id };
  }
}

/**
 * Remove our clsact filter at one direction of `ifindex`. The qdisc goes only if we
 * created it (as recorded for either direction) and no filter of ours is left on it;
 * if one is, the record of that direction inherits the duty.
 */
export function removeTcFilter(
  ifindex: number,
  direction: Direction,
  t: TcRecord,
  run: Pick<RunState, 'tc' | 'tcIngress'>,
  priority: number,
  log: HookContext['log'],
): void {
  const b = binding();
  const spec = { ifindex, direction, handle: TC_HANDLE, priority };
  const other: Direction = direction === 'egress' ? 'ingress' : 'egress';
  const otherRecord = tcRecords(run, other)[String(ifindex)];
  try {
    if (b.tcQuery(spec) !== null) b.tcDetach(spec);
    const created = t.createdQdisc || (otherRecord?.createdQdisc ?? false);
    if (created && b.tcQuery({ ...spec, direction: other }) === null) b.tcHookDestroy(ifindex);
    else if (created && otherRecord) otherRecord.createdQdisc = true;
    log.info('hook removed', { interface: t.name, direction, mode: 'tc' });
  } catch (err) {
    if (!hasErrno(err, 'ENODEV', 'ENOENT', 'EINVAL')) {
      log.warn('removing a tc filter failed', { interface: t.name, direction, error: (err as Error).message });
    }
  }
}
