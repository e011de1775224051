/**
 * 802.1Q tagging without the kernel's 8021q module (the test kernel is built without
 * CONFIG_VLAN_8021Q): a tiny tc program tags frames on a helper veth and redirects them out of
 * the wire veth, and a second one accepts only frames with our tag on the wire veth's ingress.
 *
 *   stack -> addrDev (addresses, tc egress: tag + redirect) -> wire dev egress (product hooks) -> peer
 *   peer -> wire dev ingress (product hooks, then tc ingress: check tag, pop) -> stack
 *
 * The addrDev's own veth peer (the "sink") only exists to give addrDev a carrier.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from './run.js';

/** Where the tag sits when a frame reaches the wire device's tc egress hook. */
export type VlanTagPlacement = 'data' | 'metadata';

const SOURCE = String.raw`// Test-harness VLAN emulation; see test/lib/vlan-tc.ts.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#if !defined(VLAN_ID) || !defined(OUT_IFINDEX) || !defined(TAG_IN_DATA)
#error "VLAN_ID, OUT_IFINDEX and TAG_IN_DATA must be defined"
#endif

SEC("tc/egress")
int vlan_tag_egress(struct __sk_buff *skb)
{
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_ID) < 0)
		return TC_ACT_SHOT;
#if TAG_IN_DATA
	/* A second push moves the first tag into the packet data (and sets skb->protocol to
	 * 802.1Q, as a reorder_hdr-off VLAN device would); the pop drops the second one. */
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_ID) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_vlan_pop(skb) < 0)
		return TC_ACT_SHOT;
#endif
	return bpf_redirect(OUT_IFINDEX, 0);
}

SEC("tc/ingress")
int vlan_untag_ingress(struct __sk_buff *skb)
{
	/* The receive path has already moved an in-data tag into skb metadata. */
	if (!skb->vlan_present || (skb->vlan_tci & 0x0fff) != VLAN_ID)
		return TC_ACT_SHOT;
	if (bpf_skb_vlan_pop(skb) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
`;

function archIncludeDir(): string {
  const triple = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  return `/usr/include/${triple}`;
}

/** Compiles the tagger for one wire device into `dir`; resolves with the object path; rejects with clang's stderr. */
export async function buildVlanObject(dir: string, vlanId: number, outIfindex: number, tag: VlanTagPlacement): Promise<string> {
  const src = path.join(dir, 'vlan-tag.bpf.c');
  const obj = path.join(dir, `vlan-tag-${vlanId}-${outIfindex}-${tag}.bpf.o`);
  await writeFile(src, SOURCE);
  await run(
    'clang',
    [
      '-O2',
      '-target',
      'bpf',
      `-I${archIncludeDir()}`,
      `-DVLAN_ID=${vlanId}`,
      `-DOUT_IFINDEX=${outIfindex}`,
      `-DTAG_IN_DATA=${tag === 'data' ? 1 : 0}`,
      '-c',
      src,
      '-o',
      obj,
    ],
    { timeoutMs: 30_000 },
  );
  return obj;
}

/** Makes a private build directory whose name carries the prefix and pid, so sweepStale can find leftovers. */
export function makeBuildDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `${prefix}${process.pid}-vlan-`));
}

/** Attaches the tagger: egress on addrDev (tag, redirect to the wire), ingress on wireDev (check, untag). */
export async function attachVlanEmulation(ns: string, addrDev: string, wireDev: string, obj: string): Promise<void> {
  const tc = (args: string[]): Promise<unknown> => run('ip', ['netns', 'exec', ns, 'tc', ...args], { timeoutMs: 15_000 });
  await tc(['qdisc', 'add', 'dev', addrDev, 'clsact']);
  await tc(['filter', 'add', 'dev', addrDev, 'egress', 'bpf', 'direct-action', 'obj', obj, 'sec', 'tc/egress']);
  await tc(['qdisc', 'add', 'dev', wireDev, 'clsact']);
  await tc(['filter', 'add', 'dev', wireDev, 'ingress', 'bpf', 'direct-action', 'obj', obj, 'sec', 'tc/ingress']);
}
