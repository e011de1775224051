/**
 * Desired node state: a pure function from the policies that apply to this node,
 * their keys and the host's interfaces to the BPF state the data path must hold
 * (hooks, trie entries, policy slots) and to per-policy outcomes for status.
 *
 * Overlapping destinations: the longest prefix wins (the trie decides per packet);
 * for the very same prefix on the same interface, the policy whose name sorts first
 * wins and the other records a DestinationConflict warning. Ingress is the same with
 * protected ports: an exact port wins over "every port" (the verifier looks it up
 * first); for the same port on the same interface the name that sorts first wins and
 * the other records a PortConflict warning.
 *
 * An interface whose frames the programs cannot read (see linkLayer) gets no hook: the
 * policy reports UnsupportedDevice for it. The verifier's rules for a bond are also written
 * for each of its slaves, since native XDP on a bond runs in each slave's driver and sees the
 * slave's ifindex (a rule a policy writes for the slave itself wins).
 */
import { parseCidr } from '../lib/cidr.js';
import {
  IngressActionCode, bindMask, MAX_POLICIES_PER_NODE, NT_MAX_POLICIES, NT_MAX_PORTS, TokenModeCode, encodeEgressRule, encodeExemptValue, encodeIngressRule,
  encodeEnforcingKey, encodeLpmKey, encodePolicy, encodePortKey, encodeSrcKey,
} from '../lib/abi.js';
import { type TokenKeys, type TokenPolicy, effectiveSkewSeconds, keyGenerations, secondKey, selectorMatches } from '../lib/types.js';
import { type HostInterface, type LinkLayer, linkLayer, nativeXdpCandidate, selectInterfaces } from './interfaces.js';

export type Direction = 'egress' | 'ingress';

/** Something a node found wrong (an error) or worth saying (a warning) while applying a policy. */
export interface Finding {
  reason: string;
  message: string;
}

export interface PolicyOutcome {
  name: string;
  generation: number;
  /** this node is selected by spec.nodeSelector */
  selected: boolean;
  /** slot in nt_policies, 0 when not applied */
  id: number;
  /** interfaces the policy's hooks are (to be) on */
  interfaces: string[];
  errors: Finding[];
  warnings: Finding[];
  /** the key generations this node signs with and accepts, when the Secret numbers its keys */
  keys?: { signs: number; accepts: number[] };
}

export interface DesiredHook {
  ifindex: number;
  name: string;
  direction: Direction;
  policies: string[];
  /** how its frames start: which of the programs' builds runs there */
  layer: LinkLayer;
  /** the verifier may go there at native XDP (see nativeXdpCandidate) */
  xdpNative: boolean;
}

/** A hook a policy asks for on an interface the programs cannot handle. */
export interface RefusedHook {
  ifindex: number;
  name: string;
  direction: Direction;
  reason: 'UnsupportedDevice';
  message: string;
}

export interface DesiredState {
  /** slot id -> encoded struct nt_policy */
  policySlots: Map<number, Buffer>;
  /** hex(key) -> [key, value] for nt_egress4 / nt_egress6 */
  egress4: Map<string, [Buffer, Buffer]>;
  egress6: Map<string, [Buffer, Buffer]>;
  /** hex(key) -> [key, value] for nt_ingress_ports: (ifindex, port or 0) -> (policy, action, replay limit) */
  ingressPorts: Map<string, [Buffer, Buffer]>;
  /** hex(key) -> [key, value] for nt_exempt4 / nt_exempt6: (policy, source prefix) */
  exempt4: Map<string, [Buffer, Buffer]>;
  exempt6: Map<string, [Buffer, Buffer]>;
  /** `${ifindex}/${direction}` -> hook */
  hooks: Map<string, DesiredHook>;
  /** `${ifindex}/${direction}` -> a hook not made, and why */
  refused: Map<string, RefusedHook>;
  outcomes: PolicyOutcome[];
  /** policy name -> slot id (stable across reconciles; reused on restart) */
  ids: Map<string, number>;
}

export interface DesiredInput {
  policies: readonly TokenPolicy[];
  /** key material per policy name, or the reason it could not be read */
  keys: ReadonlyMap<string, TokenKeys | Error>;
  nodeLabels: Readonly<Record<string, string>>;
  interfaces: readonly HostInterface[];
  /** slot ids assigned before (kept for policies that still exist) */
  previousIds: ReadonlyMap<string, number>;
}

function assignIds(names: readonly string[], previous: ReadonlyMap<string, number>): Map<string, number> {
  const ids = new Map<string, number>();
  const used = new Set<number>();
  for (const n of names) {
    const id = previous.get(n);
    if (id !== undefined && id > 0 && id < NT_MAX_POLICIES && !used.has(id)) {
      ids.set(n, id);
      used.add(id);
    }
  }
  let next = 1;
  for (const n of names) {
    if (ids.has(n)) continue;
    while (used.has(next)) next++;
    if (next >= NT_MAX_POLICIES) break;
    ids.set(n, next);
    used.add(next);
  }
  return ids;
}

export function computeDesired(input: DesiredInput): DesiredState {
  const sorted = [...input.policies].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const state: DesiredState = {
    policySlots: new Map(),
    egress4: new Map(),
    egress6: new Map(),
    ingressPorts: new Map(),
    exempt4: new Map(),
    exempt6: new Map(),
    hooks: new Map(),
    refused: new Map(),
    outcomes: [],
    ids: new Map(),
  };
  const applicable = sorted.filter((p) => selectorMatches(p.spec.nodeSelector, input.nodeLabels));
  const ids = assignIds(applicable.map((p) => p.metadata.name), input.previousIds);
  /** hex key -> winning policy name, to report conflicts */
  const owner = new Map<string, string>();
  const portOwner = new Map<string, string>();
  const addHook = (i: HostInterface, direction: Direction, name: string, out: PolicyOutcome): void => {
    const hk = `${i.ifindex}/${direction}`;
    const layer = linkLayer(i);
    if (!out.interfaces.includes(i.name)) out.interfaces.push(i.name);
    if (typeof layer !== 'string') {
      state.refused.set(hk, { ifindex: i.ifindex, name: i.name, direction, reason: 'UnsupportedDevice', message: layer.unsupported });
      return;
    }
    const hook = state.hooks.get(hk) ?? { ifindex: i.ifindex, name: i.name, direction, policies: [], layer, xdpNative: nativeXdpCandidate(i) };
    hook.policies.push(name);
    state.hooks.set(hk, hook);
  };

  for (const p of sorted) {
    const name = p.metadata.name;
    const out: PolicyOutcome = {
      name, generation: p.metadata.generation ?? 0, selected: false, id: 0, interfaces: [], errors: [], warnings: [],
    };
    state.outcomes.push(out);
    if (!selectorMatches(p.spec.nodeSelector, input.nodeLabels)) continue;
    out.selected = true;
    const id = ids.get(name);
    if (id === undefined) {
      out.errors.push({ reason: 'TooManyPolicies', message: `at most ${MAX_POLICIES_PER_NODE} policies can apply to one node` });
      continue;
    }
    const keys = input.keys.get(name);
    if (!keys || keys instanceof Error) {
      out.errors.push({ reason: 'SecretUnavailable', message: keys?.message ?? `Secret "${p.spec.token.secretRef.name}" not found` });
      continue;
    }
    const sel = selectInterfaces(p.spec.interfaces, input.interfaces);
    out.errors.push(...sel.errors);
    out.id = id;
    state.ids.set(name, id);
    const slot: Parameters<typeof encodePolicy>[0] = {
      mode: p.spec.token.mode === 'Static' ? TokenModeCode.Static : TokenModeCode.Keyed,
      kind: p.spec.option.kind,
      exid: p.spec.option.experimentId,
      epochSeconds: p.spec.token.epochSeconds ?? 0,
      skewSeconds: effectiveSkewSeconds(p.spec.token),
      bind: bindMask(p.spec.token.bind),
      current: keys.current,
    };
    // The slot holds two keys: the one markers sign with, and one more verifiers accept (next, else previous).
    const second = secondKey(keys);
    if (second) slot.previous = second;
    const gens = keyGenerations(keys);
    if (gens) out.keys = gens;
    state.policySlots.set(id, encodePolicy(slot));
    // Interfaces whose frames the programs cannot read get a refused hook and no rule.
    const usable = sel.selected.filter((i) => typeof linkLayer(i) === 'string');
    const refused = sel.selected.filter((i) => typeof linkLayer(i) !== 'string');
    if (p.spec.egress) addEgress(p.spec.egress, id, name, out, usable);
    if (p.spec.ingress) addIngress(p.spec.ingress, id, name, out, usable);
    for (const i of refused) {
      if (p.spec.egress) addHook(i, 'egress', name, out);
      if (p.spec.ingress) addHook(i, 'ingress', name, out);
    }
  }
  addBondSlaves();
  return state;

  /**
   * The ingress rules of each bond, also under the ifindex of each of its slaves, where no
   * policy wrote a rule of its own: native XDP on a bond runs in the slaves' drivers.
   */
  function addBondSlaves(): void {
    const byName = new Map(input.interfaces.map((i) => [i.name, i]));
    const slaves = input.interfaces.filter((i) => i.master !== undefined && byName.get(i.master)?.kind === 'bond');
    if (slaves.length === 0) return;
    const written = [...state.ingressPorts.values()];
    for (const slave of slaves) {
      const bond = byName.get(slave.master as string) as HostInterface;
      for (const [key, rule] of written) {
        if (key.readUInt32LE(0) !== bond.ifindex) continue;
        const alias = Buffer.from(key);
        alias.writeUInt32LE(slave.ifindex, 0);
        const hex = alias.toString('hex');
        if (!state.ingressPorts.has(hex)) state.ingressPorts.set(hex, [alias, rule]);
      }
    }
  }

  function addEgress(egress: NonNullable<TokenPolicy['spec']['egress']>, id: number, name: string, out: PolicyOutcome, selected: HostInterface[]): void {
    // Merge destinations of the same prefix within one policy (union of ports; empty = all).
    const perPrefix = new Map<string, { cidr: ReturnType<typeof parseCidr>; ports: Set<number> | null }>();
    const dests = egress.destinations.length
      ? egress.destinations
      : [{ cidr: '0.0.0.0/0', ports: [] }, { cidr: '::/0', ports: [] }];
    for (const d of dests) {
      const cidr = parseCidr(d.cidr);
      const cur = perPrefix.get(cidr.text);
      if (!cur) perPrefix.set(cidr.text, { cidr, ports: d.ports.length ? new Set(d.ports) : null });
      else if (cur.ports && d.ports.length) d.ports.forEach((x) => cur.ports?.add(x));
      else cur.ports = null;
    }
    for (const { cidr, ports } of perPrefix.values()) {
      const list = ports ? [...ports].sort((a, b) => a - b) : [];
      if (list.length > NT_MAX_PORTS) {
        out.errors.push({ reason: 'TooManyPorts', message: `${cidr.text}: at most ${NT_MAX_PORTS} ports per destination, got ${list.length}` });
        continue;
      }
      for (const i of selected) {
        const key = encodeLpmKey(i.ifindex, cidr);
        const hex = key.toString('hex');
        const map = cidr.family === 4 ? state.egress4 : state.egress6;
        const prev = owner.get(hex);
        if (prev !== undefined) {
          out.warnings.push({
            reason: 'DestinationConflict',
            message: `${cidr.text} on ${i.name} is also claimed by policy "${prev}", which wins (names sort first)`,
          });
          continue;
        }
        owner.set(hex, name);
        map.set(hex, [key, encodeEgressRule(id, list)]);
      }
    }
    for (const i of selected) addHook(i, 'egress', name, out);
  }

  function addIngress(ingress: NonNullable<TokenPolicy['spec']['ingress']>, id: number, name: string, out: PolicyOutcome, selected: HostInterface[]): void {
    const action = ingress.action === 'Enforce' ? IngressActionCode.Enforce : IngressActionCode.Monitor;
    const rule = encodeIngressRule(id, action, ingress.replayLimit ?? 0);
    // Exemptions first in the maps' write order (datapath.ts): never enforce before they are in place.
    for (const text of ingress.exemptSources) {
      const cidr = parseCidr(text);
      const key = encodeSrcKey(id, cidr);
      (cidr.family === 4 ? state.exempt4 : state.exempt6).set(key.toString('hex'), [key, encodeExemptValue()]);
    }
    const ports = ingress.ports.length ? ingress.ports : [0];
    for (const i of selected) {
      for (const port of ports) {
        const key = encodePortKey(i.ifindex, port);
        const hex = key.toString('hex');
        const prev = portOwner.get(hex);
        if (prev !== undefined) {
          out.warnings.push({
            reason: 'PortConflict',
            message: `${port === 0 ? 'every port' : `port ${port}`} on ${i.name} is also protected by policy "${prev}", which wins (names sort first)`,
          });
          continue;
        }
        portOwner.set(hex, name);
        state.ingressPorts.set(hex, [key, rule]);
      }
      // What has no port the verifier can see (IPv6 behind too many extension headers) is
      // dropped where any policy enforces: the first enforcing policy by name stands for them.
      const enforcing = encodeEnforcingKey(i.ifindex);
      if (action === IngressActionCode.Enforce && !state.ingressPorts.has(enforcing.toString('hex'))) {
        state.ingressPorts.set(enforcing.toString('hex'), [enforcing, rule]);
      }
      addHook(i, 'ingress', name, out);
    }
  }
}
