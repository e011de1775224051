/**
 * The marker's tests (marker.test.ts), every one, on marker_compat.bpf.o: the build the
 * agent loads where the kernel lacks bpf_cast_to_kern_ctx() (before 6.2), which asks
 * bpf_check_mtu() and bpf_l4_csum_replace() what the other build reads from the kernel's skb.
 */
import { bpfObjectPath } from '../../src/lib/package.js';

process.env.NT_TEST_MARKER_OBJECT = bpfObjectPath('marker_compat');
await import('./marker.test.js');
