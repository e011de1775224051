/**
 * The whole of a verifier's nt_port_index, for tests that check what it holds: every port
 * looked up (the agent reads back only the ports its rules name, map-sync.ts readPortIndex).
 */
import { NT_MAX_PORT_INDEX, encodePortKey } from '../../src/lib/abi.js';
import { type Entries, readPortIndex } from '../../src/agent/map-sync.js';
import type { NativeMap } from '../../src/native/binding.js';

/** Every entry of nt_port_index `map` that is not all zero. */
export function wholePortIndex(map: NativeMap): Entries {
  const everyPort: Entries = new Map();
  for (let port = 0; port < NT_MAX_PORT_INDEX; port++) {
    const key = encodePortKey(0, port);
    everyPort.set(key.toString('hex'), [key, Buffer.alloc(0)]);
  }
  return readPortIndex(map, everyPort);
}
