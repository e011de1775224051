/**
 * The state the verifier fuzzer installs in the ingress verifier's maps, and the same state
 * as plain data for the reference model (verifier-model.ts): the marker fuzzer's policies
 * (static and keyed, with and without a previous token or key, a keyed one without an epoch
 * length), protected ports per device with Monitor and Enforce, a rule whose policy slot is
 * empty, one whose id is past the policy array, an action value that is neither, "every
 * port" rules, replay limits too high to be reached, and exempt sources that belong to one
 * policy and must not exempt another's SYNs.
 */
import type { NativeObject } from '../src/native/binding.js';
import {
  IngressActionCode,
  IngressFlag,
  encodeEnforcingKey,
  encodeExemptValue,
  encodeIngressRule,
  encodePortKey,
  portIndexEntries,
  encodeSrcKey,
} from '../src/lib/abi.js';
import { CounterSlots } from '../src/agent/counters.js';
import { cidrContains, parseCidr, type Cidr } from '../src/lib/cidr.js';
import { EMPTY_POLICY_ID, installPolicies, type Device } from './world.js';

export interface IngressRuleDef {
  /** 0 = every port on the device */
  port: number;
  policyId: number;
  /** IngressActionCode, or another number (which the verifier treats as Monitor) */
  action: number;
  replayLimit: number;
}

export interface ExemptDef {
  policyId: number;
  cidr: Cidr;
}

/** A policy id past the end of nt_policies (1024 slots): its lookup fails. */
export const OUT_OF_RANGE_POLICY_ID = 4000;

/** An ingress action value that is neither Monitor nor Enforce: counted, never dropped. */
export const ODD_ACTION = 7;

/** A replay limit no fuzz run reaches: the replay path runs, its verdict never changes. */
const NO_REPLAY = 0xffffffff;

const { Monitor, Enforce } = IngressActionCode;
const r = (port: number, policyId: number, action: number, replayLimit = 0): IngressRuleDef => ({
  port,
  policyId,
  action,
  replayLimit,
});

/**
 * Protected ports by position in the run's device list (0 is the loopback device). A run
 * with fewer devices uses the first lists only.
 */
export const INGRESS_RULES: ReadonlyArray<readonly IngressRuleDef[]> = [
  [
    r(443, 1, Enforce),
    r(8443, 6, Enforce),
    r(80, 7, Monitor),
    r(22, 2, Enforce),
    r(25, 4, Enforce, NO_REPLAY),
    r(53, 5, Enforce),
    r(6379, 8, Enforce),
    r(8080, EMPTY_POLICY_ID, Enforce),
    r(9, OUT_OF_RANGE_POLICY_ID, Enforce),
    r(110, 1, ODD_ACTION),
    r(993, 6, Enforce, NO_REPLAY),
    r(7777, 9, Enforce),
    r(8888, 10, Enforce),
    r(0, 4, Monitor),
  ],
  [r(0, 6, Enforce), r(443, 2, Monitor), r(8443, 7, Enforce)],
  [r(443, 1, Monitor), r(8443, 7, Enforce), r(22, 6, Enforce, NO_REPLAY), r(25, 5, Enforce), r(8888, 10, Monitor)],
];

/** Rules for an interface no case runs on: they must never decide anything. */
export const DECOY_INGRESS_IFINDEX = 4242;
const DECOY_RULES: readonly IngressRuleDef[] = [r(0, 1, Enforce), r(443, 2, Enforce)];

const ex = (policyId: number, cidr: string): ExemptDef => ({ policyId, cidr: parseCidr(cidr) });

/** Exempt sources. The same prefix under two policies, and prefixes of policies no rule uses. */
export const EXEMPT: readonly ExemptDef[] = [
  ex(1, '10.9.0.0/16'),
  ex(1, '2001:db8:9::/48'),
  ex(5, '10.9.0.0/16'),
  ex(6, '10.9.9.9/32'),
  ex(6, 'fd00:6::/32'),
  ex(2, '10.8.0.0/16'),
  ex(2, '::/0'),
  ex(7, '192.0.2.0/24'),
  ex(8, '172.16.0.0/12'),
  ex(EMPTY_POLICY_ID, '0.0.0.0/0'),
  ex(EMPTY_POLICY_ID, '::/0'),
  ex(9, '0.0.0.0/0'),
];

/** Source address prefixes drawn by the generator, weighted; completed like world.ts's pools. */
export const SRC_V4_POOLS: ReadonlyArray<readonly [number, string]> = [
  [6, '10.'],
  [3, '10.9.'],
  [1, '10.9.9.9'],
  [2, '10.8.'],
  [2, '192.0.2.'],
  [2, '172.16.'],
  [1, '172.31.'],
  [2, ''],
];
export const SRC_V6_POOLS: ReadonlyArray<readonly [number, string]> = [
  [6, '2001:db8:'],
  [3, '2001:db8:9:'],
  [2, 'fd00:6:'],
  [2, 'fd00:'],
  [1, 'fe80::'],
  [2, ''],
];

/** The rules of the device at `position` in the run's device list. */
export function rulesFor(position: number): readonly IngressRuleDef[] {
  return INGRESS_RULES[position] ?? [];
}

/** The rule that protects `port` on the device at `position`: the exact port first, then "every port". */
export function ruleFor(position: number, port: number): IngressRuleDef | undefined {
  const rules = rulesFor(position);
  return rules.find((x) => x.port === port) ?? rules.find((x) => x.port === 0);
}

/** Is `saddr` an exempt source of policy `policyId`? */
export function isExempt(policyId: number, saddr: Buffer): boolean {
  return EXEMPT.some((e) => e.policyId === policyId && e.cidr.addr.length === saddr.length && cidrContains(e.cidr, saddr));
}

/** IngressFlag bits of a policy: which families of exempt sources it has (what the agent puts in its rules). */
function exemptFlags(policyId: number): number {
  let flags = 0;
  for (const e of EXEMPT) if (e.policyId === policyId) flags |= e.cidr.family === 4 ? IngressFlag.Exempt4 : IngressFlag.Exempt6;
  return flags;
}

/**
 * Write the policies, the clock, the protected ports and the exemptions into a loaded
 * verifier, each rule with the counter slot of its device and policy, as the agent does.
 */
export function installVerifierWorld(obj: NativeObject, devices: readonly Device[]): void {
  installPolicies(obj);
  const ports = obj.map('nt_ingress_ports');
  const portIndex = obj.map('nt_port_index');
  const exempt4 = obj.map('nt_exempt4');
  const exempt6 = obj.map('nt_exempt6');
  const slots = CounterSlots.of(obj);
  try {
    const encode = (ifindex: number, rule: IngressRuleDef): Buffer =>
      encodeIngressRule(rule.policyId, rule.action as IngressActionCode, {
        replayLimit: rule.replayLimit,
        slot: slots.slot(ifindex, rule.policyId),
        flags: exemptFlags(rule.policyId),
      });
    const written: [Buffer, Buffer][] = [];
    const write = (key: Buffer, value: Buffer): void => {
      ports.update(key, value);
      written.push([key, value]);
    };
    const put = (ifindex: number, rule: IngressRuleDef): void => write(encodePortKey(ifindex, rule.port), encode(ifindex, rule));
    // As the agent does: where a rule enforces, one of them also stands for what has no visible port.
    const enforcing = (ifindex: number, rules: readonly IngressRuleDef[]): void => {
      const e = rules.find((x) => x.action === IngressActionCode.Enforce);
      if (e) write(encodeEnforcingKey(ifindex), encode(ifindex, { ...e, action: IngressActionCode.Enforce }));
    };
    devices.forEach((d, i) => {
      // Every hooked device has its own counters (unreadable frames), rules or not.
      slots.slot(d.ifindex, 0);
      for (const rule of rulesFor(i)) put(d.ifindex, rule);
      enforcing(d.ifindex, rulesFor(i));
    });
    for (const rule of DECOY_RULES) put(DECOY_INGRESS_IFINDEX, rule);
    enforcing(DECOY_INGRESS_IFINDEX, DECOY_RULES);
    for (const e of EXEMPT)
      (e.cidr.family === 4 ? exempt4 : exempt6).update(encodeSrcKey(e.policyId, e.cidr), encodeExemptValue());
    // The port index the agent derives from the rules: the programs read it first.
    for (const [key, value] of portIndexEntries(written).values()) portIndex.update(key, value);
  } finally {
    for (const m of [ports, portIndex, exempt4, exempt6]) m.close();
    slots.close();
  }
}
