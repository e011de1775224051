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
import { type Cidr, parseCidr } from '../lib/cidr.js';
import {
  IngressActionCode,
  IngressFlag,
  bindMask,
  MAX_POLICIES_PER_NODE,
  NT_MAX_POLICIES,
  NT_MAX_PORTS,
  TokenModeCode,
  encodeEgressRule,
  encodeExemptValue,
  encodeIngressRule,
  encodeEnforcingKey,
  encodeLpmKey,
  encodePolicy,
  encodePortKey,
  encodeSrcKey,
} from '../lib/abi.js';
import {
  type TokenKeys,
  type TokenPolicy,
  effectiveSkewSeconds,
  keyGenerations,
  secondKey,
  selectorMatches,
} from '../lib/types.js';
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

/**
 * Encodings a node computes again on every reconcile: a destination's parsed prefix, its trie
 * key on an interface (with the key's hex form), a rule's value. The agent keeps one across
 * reconciles, so applying a policy of 100 000 prefixes again with one of them changed costs
 * map lookups, not 100 000 parses and encodings, and unchanged entries are the same Buffer
 * objects as before (the data path compares those by identity first). Whatever a computation
 * leaves unused is dropped when the memo has grown past twice what the last one used.
 */
export class EncodingMemo {
  /** destination text -> its prefix, one object per prefix (two texts of one prefix share it) */
  private readonly cidrs = new Map<string, Cidr>();
  private readonly canonical = new Map<string, Cidr>();
  /** prefix -> its trie keys, one per interface, each with the entry last built for it */
  private readonly keys = new Map<Cidr, KeyEntry>();
  private readonly rules = new Map<string, Buffer>();
  /** per policy: its destinations as the last computation saw them, position by position */
  private readonly lastDests = new Map<string, DestCache>();
  private used = 0;

  /**
   * A policy's destinations with their prefixes, whether each has a prefix of its own, and the
   * rule and entry each position got the last time. Where a destination is what it was then
   * (an edit changes a few of them), nothing about it is looked up or encoded again.
   */
  destinations(policy: string, id: number, dests: readonly { cidr: string; ports: readonly number[] }[]): DestCache {
    const last = this.lastDests.get(policy);
    const n = dests.length;
    const same = last !== undefined && last.texts.length === n;
    const out: DestCache = {
      id,
      texts: new Array<string>(n),
      ports: new Array<readonly number[]>(n),
      cidrs: new Array<Cidr>(n),
      unique: false,
      prefixes: null,
      rules: new Array<Buffer | undefined>(n),
      entries: new Array<KeyEntry | undefined>(n),
    };
    const changed: number[] = [];
    for (let k = 0; k < n; k++) {
      const d = dests[k] as { cidr: string; ports: readonly number[] };
      out.texts[k] = d.cidr;
      out.ports[k] = d.ports;
      if (same && last.texts[k] === d.cidr) {
        out.cidrs[k] = last.cidrs[k] as Cidr;
        if (last.id === id && samePorts(last.ports[k] as readonly number[], d.ports)) {
          out.rules[k] = last.rules[k];
          out.entries[k] = last.entries[k];
        }
      } else {
        out.cidrs[k] = this.cidr(d.cidr);
        changed.push(k);
      }
    }
    if (same && last.unique && last.prefixes) {
      // The set of prefixes, updated for the positions that changed (the last cache is done with).
      const set = last.prefixes;
      for (const k of changed) set.delete(last.cidrs[k] as Cidr);
      let unique = true;
      for (const k of changed) {
        const c = out.cidrs[k] as Cidr;
        if (set.has(c)) unique = false;
        set.add(c);
      }
      if (unique) {
        out.unique = true;
        out.prefixes = set;
      }
    }
    if (!out.unique) {
      const set = new Set(out.cidrs);
      out.unique = set.size === n;
      out.prefixes = out.unique ? set : null;
    }
    this.lastDests.set(policy, out);
    return out;
  }

  cidr(text: string): Cidr {
    let c = this.cidrs.get(text);
    if (!c) {
      const parsed = parseCidr(text);
      c = this.canonical.get(parsed.text) ?? parsed;
      this.canonical.set(c.text, c);
      this.cidrs.set(text, c);
    }
    return c;
  }

  /** The trie entry of a prefix on an interface with a rule: the same objects as last time when nothing changed. */
  entry(ifindex: number, cidr: Cidr, rule: Buffer): KeyEntry {
    this.used++;
    let e = this.keys.get(cidr);
    while (e && e.ifindex !== ifindex) e = e.next;
    if (!e) {
      const key = encodeLpmKey(ifindex, cidr);
      e = { ifindex, hex: key.toString('hex'), entry: [key, rule], next: this.keys.get(cidr) };
      this.keys.set(cidr, e);
    } else if (e.entry[1] !== rule) {
      e.entry = [e.entry[0], rule];
    }
    return e;
  }

  egressRule(policyId: number, ports: readonly number[]): Buffer {
    const id = ports.length ? `${policyId}/${ports.join(',')}` : String(policyId);
    let v = this.rules.get(id);
    if (!v) this.rules.set(id, (v = encodeEgressRule(policyId, ports)));
    return v;
  }

  /** An entry was taken from a position's cache (counted like one looked up). */
  reused(): void {
    this.used++;
  }

  /** One computation is done: forget everything if most of it went unused. */
  endRound(): void {
    if (this.cidrs.size + this.keys.size > 4 * this.used + 4096) {
      this.cidrs.clear();
      this.canonical.clear();
      this.keys.clear();
      this.rules.clear();
      this.lastDests.clear();
    }
    this.used = 0;
  }
}

/** What the memo keeps of a policy's destinations, position by position. */
export interface DestCache {
  /** the policy slot the rules were built for */
  id: number;
  texts: string[];
  ports: (readonly number[])[];
  cidrs: Cidr[];
  /** every destination has a prefix of its own (no two name the same prefix) */
  unique: boolean;
  /** the prefixes, when unique */
  prefixes: Set<Cidr> | null;
  /** the rule each position got, once built */
  rules: (Buffer | undefined)[];
  /** the entry each position got on the first interface selected, once built */
  entries: (KeyEntry | undefined)[];
}

function samePorts(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A prefix's trie key on one interface, and the entry last built for it. */
interface KeyEntry {
  ifindex: number;
  hex: string;
  entry: [Buffer, Buffer];
  /** the same prefix on another interface */
  next: KeyEntry | undefined;
}

/** The ports in ascending order without repeats; the array itself when it already is so. */
function sortedPorts(ports: readonly number[]): readonly number[] {
  for (let i = 1; i < ports.length; i++) {
    if ((ports[i] as number) <= (ports[i - 1] as number)) return [...new Set(ports)].sort((a, b) => a - b);
  }
  return ports;
}

export interface DesiredInput {
  policies: readonly TokenPolicy[];
  /** key material per policy name, or the reason it could not be read */
  keys: ReadonlyMap<string, TokenKeys | Error>;
  nodeLabels: Readonly<Record<string, string>>;
  interfaces: readonly HostInterface[];
  /** slot ids assigned before (kept for policies that still exist) */
  previousIds: ReadonlyMap<string, number>;
  /** encodings kept from earlier computations (the result is the same with or without) */
  memo?: EncodingMemo;
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

/** A desired state with nothing in it: no rules, no hooks, no policies. */
export function emptyDesiredState(): DesiredState {
  return {
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
}

export function computeDesired(input: DesiredInput): DesiredState {
  const memo = input.memo ?? new EncodingMemo();
  try {
    return compute(input, memo);
  } finally {
    memo.endRound();
  }
}

function compute(input: DesiredInput, memo: EncodingMemo): DesiredState {
  const sorted = [...input.policies].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const state = emptyDesiredState();
  const applicable = sorted.filter((p) => selectorMatches(p.spec.nodeSelector, input.nodeLabels));
  const ids = assignIds(
    applicable.map((p) => p.metadata.name),
    input.previousIds,
  );
  /** policy slot -> name, to name the policy that won a destination */
  const nameOfId = new Map([...ids].map(([n, i]) => [i, n]));
  const portOwner = new Map<string, string>();
  const addHook = (i: HostInterface, direction: Direction, name: string, out: PolicyOutcome): void => {
    const hk = `${i.ifindex}/${direction}`;
    const layer = linkLayer(i);
    if (!out.interfaces.includes(i.name)) out.interfaces.push(i.name);
    if (typeof layer !== 'string') {
      state.refused.set(hk, {
        ifindex: i.ifindex,
        name: i.name,
        direction,
        reason: 'UnsupportedDevice',
        message: layer.unsupported,
      });
      return;
    }
    const hook = state.hooks.get(hk) ?? {
      ifindex: i.ifindex,
      name: i.name,
      direction,
      policies: [],
      layer,
      xdpNative: nativeXdpCandidate(i),
    };
    hook.policies.push(name);
    state.hooks.set(hk, hook);
  };

  for (const p of sorted) {
    const name = p.metadata.name;
    const out: PolicyOutcome = {
      name,
      generation: p.metadata.generation ?? 0,
      selected: false,
      id: 0,
      interfaces: [],
      errors: [],
      warnings: [],
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
      out.errors.push({
        reason: 'SecretUnavailable',
        message: keys?.message ?? `Secret "${p.spec.token.secretRef.name}" not found`,
      });
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

  function addEgress(
    egress: NonNullable<TokenPolicy['spec']['egress']>,
    id: number,
    name: string,
    out: PolicyOutcome,
    selected: HostInterface[],
  ): void {
    const dests = egress.destinations.length
      ? egress.destinations
      : [
          { cidr: '0.0.0.0/0', ports: [] },
          { cidr: '::/0', ports: [] },
        ];
    const plan = memo.destinations(name, id, dests);
    // Merge destinations of the same prefix within one policy (union of ports; empty = all).
    let prefixes: Iterable<[Cidr, readonly number[] | null, number]>;
    if (plan.unique) {
      prefixes = (function* (): Generator<[Cidr, readonly number[] | null, number]> {
        for (let k = 0; k < plan.cidrs.length; k++) {
          const ports = plan.ports[k] as readonly number[];
          yield [plan.cidrs[k] as Cidr, ports.length ? ports : null, k];
        }
      })();
    } else {
      const perPrefix = new Map<Cidr, readonly number[] | null>();
      for (let k = 0; k < plan.cidrs.length; k++) {
        const cidr = plan.cidrs[k] as Cidr;
        const ports = plan.ports[k] as readonly number[];
        const cur = perPrefix.get(cidr);
        if (cur === undefined && !perPrefix.has(cidr)) perPrefix.set(cidr, ports.length ? ports : null);
        else perPrefix.set(cidr, cur && ports.length ? [...cur, ...ports] : null);
      }
      prefixes = [...perPrefix].map(([c, p]) => [c, p, -1] as [Cidr, readonly number[] | null, number]);
    }
    // Another policy (one whose name sorts first) may already hold a prefix only when a map is not empty.
    const contested4 = state.egress4.size > 0;
    const contested6 = state.egress6.size > 0;
    const one = selected.length === 1 ? selected[0] : undefined;
    for (const [cidr, ports, k] of prefixes) {
      let rule = k >= 0 ? plan.rules[k] : undefined;
      if (!rule) {
        const list = ports ? sortedPorts(ports) : [];
        if (list.length > NT_MAX_PORTS) {
          out.errors.push({
            reason: 'TooManyPorts',
            message: `${cidr.text}: at most ${NT_MAX_PORTS} ports per destination, got ${list.length}`,
          });
          continue;
        }
        rule = memo.egressRule(id, list);
        if (k >= 0) plan.rules[k] = rule;
      }
      const four = cidr.family === 4;
      const map = four ? state.egress4 : state.egress6;
      const contested = four ? contested4 : contested6;
      for (const i of selected) {
        let e = i === one && k >= 0 ? plan.entries[k] : undefined;
        if (!e || e.ifindex !== i.ifindex || e.entry[1] !== rule) {
          e = memo.entry(i.ifindex, cidr, rule);
          if (i === one && k >= 0) plan.entries[k] = e;
        } else {
          memo.reused();
        }
        const prev = contested ? map.get(e.hex) : undefined;
        if (prev !== undefined) {
          out.warnings.push({
            reason: 'DestinationConflict',
            message: `${cidr.text} on ${i.name} is also claimed by policy "${nameOfId.get(prev[1].readUInt32LE(0))}", which wins (names sort first)`,
          });
          continue;
        }
        map.set(e.hex, e.entry);
      }
    }
    for (const i of selected) addHook(i, 'egress', name, out);
  }

  function addIngress(
    ingress: NonNullable<TokenPolicy['spec']['ingress']>,
    id: number,
    name: string,
    out: PolicyOutcome,
    selected: HostInterface[],
  ): void {
    const action = ingress.action === 'Enforce' ? IngressActionCode.Enforce : IngressActionCode.Monitor;
    // Exemptions first in the maps' write order (datapath.ts): never enforce before they are in place.
    let flags = 0;
    for (const text of ingress.exemptSources) {
      const cidr = parseCidr(text);
      const key = encodeSrcKey(id, cidr);
      (cidr.family === 4 ? state.exempt4 : state.exempt6).set(key.toString('hex'), [key, encodeExemptValue()]);
      flags |= cidr.family === 4 ? IngressFlag.Exempt4 : IngressFlag.Exempt6;
    }
    // The verifier asks the exempt tries only for a policy that has exemptions of the SYN's family.
    const rule = encodeIngressRule(id, action, { replayLimit: ingress.replayLimit ?? 0, flags });
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
