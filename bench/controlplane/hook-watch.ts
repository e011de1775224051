/**
 * Polls the kernel's egress hooks of one interface (TCX links, and netoken's tc filter) every
 * few ms and prints a JSON line {t, tcx, tc} at the start and at each change, t in wall-clock
 * ms. apply-to-wire.ts runs it inside the node's namespace to time a hook's removal.
 *
 *   node hook-watch.js <ifindex> <everyMs>
 */
import { TC_HANDLE } from '../../src/agent/hooks/tc.js';
import { binding } from '../../src/native/binding.js';
import { now } from './common.js';

const b = binding();
const ifindex = Number(process.argv[2]);
let last = '';
const poll = (): void => {
  const tcx = b.tcxQuery(ifindex, 'egress');
  const tc = b.tcQuery({ ifindex, direction: 'egress', handle: TC_HANDLE, priority: 1 });
  const s = JSON.stringify({ tcx, tc });
  if (s === last) return;
  last = s;
  process.stdout.write(`${JSON.stringify({ t: now(), tcx, tc })}\n`);
};
poll();
setInterval(poll, Number(process.argv[3]));
