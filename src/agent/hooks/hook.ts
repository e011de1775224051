/**
 * What every hook mechanism shares: the status of a hook, the state the attach code works
 * on, and where TCX links are pinned. One file per mechanism beside this one: tc.ts (TCX
 * links and clsact filters), xdp.ts, detach.ts (removing what is ours).
 */
import path from 'node:path';
import type { Logger } from '../../lib/log.js';
import type { NativeLink } from '../../native/binding.js';
import type { DesiredHook, Direction } from '../desired.js';
import type { RunState, XdpMode } from '../run-state.js';

export type AttachMode = 'tcx' | 'tc' | XdpMode;

export interface HookStatus {
  ifindex: number;
  name: string;
  direction: Direction;
  mode: AttachMode;
  progId: number;
  linkId?: number;
  policies: string[];
}

export interface HookError {
  ifindex: number;
  name: string;
  direction: Direction;
  /** AttachFailed: the kernel refused; UnsupportedDevice: its frames are of a kind the programs cannot read */
  reason: 'AttachFailed' | 'UnsupportedDevice';
  message: string;
}

/** The state hooks are attached and removed with. */
export interface HookContext {
  /** the BPF state directory: TCX links are pinned in its links/ */
  stateDir: string;
  /** what the kernel cannot remember for us (tc filters, XDP programs), saved by the caller */
  run: RunState;
  /** open TCX links, by `${ifindex}/${direction}` */
  links: Map<string, NativeLink>;
  /** priority of our clsact filters */
  tcPriority: number;
  log: Logger;
}

export function linkPin(stateDir: string, hook: { ifindex: number; direction: Direction }): string {
  return path.join(stateDir, 'links', `${hook.direction}-${hook.ifindex}`);
}

export function hookBase(h: DesiredHook): Pick<HookStatus, 'ifindex' | 'name' | 'direction' | 'policies'> {
  return { ifindex: h.ifindex, name: h.name, direction: h.direction, policies: [...h.policies] };
}
