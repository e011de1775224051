/**
 * Whether a hook apply() reported is still in the kernel, running the program it reported:
 * someone may have removed it behind our back (a TCX link detached, an XDP program or a clsact
 * qdisc replaced). What the agent's metrics say of each hook.
 */
import { binding } from '../../native/binding.js';
import { type HookStatus, linkPin } from './hook.js';
import { TC_HANDLE } from './tc.js';

/** False also when the kernel cannot be asked (the interface or the pin is gone). */
export function isHookLive(h: HookStatus, stateDir: string, tcPriority: number): boolean {
  const b = binding();
  try {
    switch (h.mode) {
      case 'tcx': {
        const l = b.linkFromPin(linkPin(stateDir, h));
        try {
          const i = l.info();
          return i.id === h.linkId && i.progId === h.progId;
        } finally {
          l.close();
        }
      }
      case 'tc':
        return b.tcQuery({ ifindex: h.ifindex, direction: h.direction, handle: TC_HANDLE, priority: tcPriority }) === h.progId;
      default:
        return b.xdpQuery(h.ifindex).progId === h.progId;
    }
  } catch {
    return false;
  }
}
