/**
 * The marker's tests (marker.test.ts), every one, on marker_compat.bpf.o: the build the
 * agent loads where the kernel lacks bpf_cast_to_kern_ctx() (before 6.2), which asks
 * bpf_check_mtu() and bpf_l4_csum_replace() what the other build reads from the kernel's skb.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.NT_TEST_MARKER_OBJECT = path.join(fileURLToPath(new URL('../../../', import.meta.url)), 'build/bpf/marker_compat.bpf.o');
await import('./marker.test.js');
