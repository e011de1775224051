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
import { type Entry, EntryTable } from './entry-table.js';
import { type HostInterface, type LinkLayer, linkLayer, nativeXdpCandidate, selectInterfaces } from './interfaces.js';
import { by } from '../lib/order.js';

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
  /**
   * hex(key) -> [key, value] for nt_egress4 / nt_egress6; with an EncodingMemo, an edit's
   * tables are made from the last ones (the data path then writes only what differs)
   */
  egress4: EntryTable;
  egress6: EntryTable;
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
  private lastEgress: EgressRound | undefined;
  /** the policies whose destinations this computation has seen */
  private readonly round = new Set<string>();
  private used = 0;

  /**
   * A policy's destinations with their prefixes, whether each has a prefix of its own, and the
   * rule and entry each position got the last time. Where a destination is what it was then
   * (an edit changes a few of them), nothing about it is looked up or encoded again.
   */
  destinations(policy: string, id: number, dests: readonly { cidr: string; ports: readonly number[] }[]): DestCache {
    // A name seen twice in one computation (never from a source) starts afresh: the cache is in use.
    const last = this.round.has(policy) ? undefined : this.lastDests.get(policy);
    this.round.add(policy);
    const n = dests.length;
    const m = last?.texts.length ?? 0;
    // What is as it was: the positions before the first destination that differs, and after the last.
    const same = (j: number, k: number): boolean => {
      const d = dests[k] as { cidr: string; ports: readonly number[] };
      return last !== undefined && last.texts[j] === d.cidr && samePorts(last.ports[j] as readonly number[], d.ports);
    };
    const max = Math.min(n, m);
    let lo = 0;
    while (lo < max && same(lo, lo)) lo++;
    let hi = 0;
    while (hi < max - lo && same(m - 1 - hi, n - 1 - hi)) hi++;
    const removed = last ? last.cidrs.slice(lo, m - hi) : [];
    const added: Cidr[] = [];
    for (let k = lo; k < n - hi; k++) added.push(this.cidr((dests[k] as { cidr: string }).cidr));
    let out: DestCache;
    if (last && last.id === id && removed.length + added.length <= 1024) {
      // An edit: the last cache (done with) gets the positions that changed, in place.
      const texts = dests.slice(lo, n - hi).map((d) => d.cidr);
      const ports = dests.slice(lo, n - hi).map((d) => d.ports);
      const none = new Array<undefined>(added.length);
      last.texts.splice(lo, removed.length, ...texts);
      last.ports.splice(lo, removed.length, ...ports);
      last.cidrs.splice(lo, removed.length, ...added);
      last.rules.splice(lo, removed.length, ...none);
      last.entries.splice(lo, removed.length, ...none);
      out = last;
    } else {
      const carry = last !== undefined && last.id === id;
      out = {
        id,
        texts: new Array<string>(n),
        ports: new Array<readonly number[]>(n),
        cidrs: new Array<Cidr>(n),
        unique: false,
        prefixes: null,
        rules: new Array<Buffer | undefined>(n),
        entries: new Array<KeyEntry | undefined>(n),
        window: null,
      };
      for (let k = 0; k < n; k++) {
        const d = dests[k] as { cidr: string; ports: readonly number[] };
        out.texts[k] = d.cidr;
        out.ports[k] = d.ports;
        const j = k < lo ? k : k >= n - hi ? k - n + m : -1;
        if (j < 0) {
          out.cidrs[k] = added[k - lo] as Cidr;
        } else {
          const l = last as DestCache;
          out.cidrs[k] = l.cidrs[j] as Cidr;
          if (carry) {
            out.rules[k] = l.rules[j];
            out.entries[k] = l.entries[j];
          }
        }
      }
    }
    out.window = last && last.id === id ? { lo, hi, removed } : null;
    // The set of prefixes, updated for the positions that changed (the last cache is done with).
    const set = last?.unique ? last.prefixes : null;
    out.unique = false;
    out.prefixes = null;
    if (set) {
      for (const c of removed) set.delete(c);
      let unique = true;
      for (const c of added) {
        if (set.has(c)) unique = false;
        set.add(c);
      }
      if (unique) {
        out.unique = true;
        out.prefixes = set;
      }
    }
    if (!out.unique) {
      const all = new Set(out.cidrs);
      out.unique = all.size === n;
      out.prefixes = out.unique ? all : null;
    }
    out.id = id;
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

  /** The hex form of a prefix's trie key on an interface. */
  hex(ifindex: number, cidr: Cidr): string {
    let e = this.keys.get(cidr);
    while (e && e.ifindex !== ifindex) e = e.next;
    return e ? e.hex : encodeLpmKey(ifindex, cidr).toString('hex');
  }

  /** Entries were taken from a position's cache, or kept from the last tables (counted like ones looked up). */
  reused(count = 1): void {
    this.used += count;
  }

  /** The egress tables of the last computation and what made them (once: a computation that fails leaves none). */
  takeEgress(): EgressRound | undefined {
    const e = this.lastEgress;
    this.lastEgress = undefined;
    return e;
  }

  keepEgress(round: EgressRound): void {
    this.lastEgress = round;
  }

  /** One computation is done: forget everything if most of it went unused. */
  endRound(): void {
    if (this.cidrs.size + this.keys.size > 4 * this.used + 4096) {
      this.cidrs.clear();
      this.canonical.clear();
      this.keys.clear();
      this.rules.clear();
      this.lastDests.clear();
      this.lastEgress = undefined;
    }
    this.used = 0;
    this.round.clear();
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
  /**
   * Against the last cache of the policy (with the same slot): positions [lo, length - hi) are
   * new, and `removed` are the prefixes that were where they are; null when there is no last.
   */
  window: { lo: number; hi: number; removed: Cidr[] } | null;
}

/** What the egress tables of a computation were made of: enough to tell whether the next one can start from them. */
export interface EgressRound {
  /** the policies that wrote egress rules, in order: name, slot and interfaces */
  signature: string;
  /** no conflict, no refused destination, no prefix named twice in a policy: every claim is in the tables */
  clean: boolean;
  egress4: EntryTable;
  egress6: EntryTable;
}

/** One policy's egress rules, written once every policy has been seen (see egressTables). */
interface EgressWork {
  name: string;
  id: number;
  out: PolicyOutcome;
  selected: HostInterface[];
  plan: DestCache;
  /** where its warnings go among the policy's others */
  warningsAt: number;
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
    egress4: EntryTable.empty(),
    egress6: EntryTable.empty(),
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
  const sorted = [...input.policies].sort(by((x) => x.metadata.name));
  const state = emptyDesiredState();
  const applicable = sorted.filter((p) => selectorMatches(p.spec.nodeSelector, input.nodeLabels));
  const ids = assignIds(
    applicable.map((p) => p.metadata.name),
    input.previousIds,
  );
  /** policy slot -> name, to name the policy that won a destination */
  const nameOfId = new Map([...ids].map(([n, i]) => [i, n]));
  const portOwner = new Map<string, string>();
  const egressWork: EgressWork[] = [];
  // Taken now: a computation that fails before its tables are made leaves none to start from.
  const last = memo.takeEgress();
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
  egressTables();
  return state;

  /**
   * The egress tables: made from the last computation's where it was clean and wrote for the
   * same policies on the same interfaces and slots (then what changed is the destinations that
   * changed), else from every policy's destinations in name order.
   */
  function egressTables(): void {
    const signature = JSON.stringify(egressWork.map((w) => [w.name, w.id, w.selected.map((i) => i.ifindex)]));
    const round = (last?.clean && last.signature === signature && fromLast(last)) || fromScratch();
    state.egress4 = round.egress4;
    state.egress6 = round.egress6;
    memo.keepEgress({ ...round, signature });
  }

  /**
   * The last tables with each policy's removed destinations taken out and its new ones put in;
   * null where that would not be what fromScratch() gives (a new destination another policy
   * holds: a conflict to report; too many ports; a prefix named twice).
   */
  function fromLast(last: EgressRound): Omit<EgressRound, 'signature'> | null {
    const changes4 = new Map<string, Entry | null>();
    const changes6 = new Map<string, Entry | null>();
    for (const { plan, selected } of egressWork) {
      if (!plan.unique || !plan.window) return null;
      for (const c of plan.window.removed)
        for (const i of selected) (c.family === 4 ? changes4 : changes6).set(memo.hex(i.ifindex, c), null);
    }
    for (const { plan, selected, id } of egressWork) {
      const { lo, hi } = plan.window as NonNullable<DestCache['window']>;
      const n = plan.cidrs.length;
      const one = selected.length === 1 ? selected[0] : undefined;
      memo.reused((lo + hi) * selected.length);
      for (let k = lo; k < n - hi; k++) {
        const cidr = plan.cidrs[k] as Cidr;
        let rule = plan.rules[k];
        if (!rule) {
          const list = sortedPorts(plan.ports[k] as readonly number[]);
          if (list.length > NT_MAX_PORTS) return null;
          rule = plan.rules[k] = memo.egressRule(id, list);
        }
        const four = cidr.family === 4;
        const table = four ? last.egress4 : last.egress6;
        const changes = four ? changes4 : changes6;
        for (const i of selected) {
          const e = memo.entry(i.ifindex, cidr, rule);
          if (i === one) plan.entries[k] = e;
          const change = changes.get(e.hex);
          if (change || (change === undefined && table.has(e.hex))) return null;
          changes.set(e.hex, e.entry);
        }
      }
    }
    return { clean: true, egress4: last.egress4.with(changes4), egress6: last.egress6.with(changes6) };
  }

  /** Every policy's destinations in name order: for the same prefix on the same interface, the first policy wins. */
  function fromScratch(): Omit<EgressRound, 'signature'> {
    const egress4 = new Map<string, Entry>();
    const egress6 = new Map<string, Entry>();
    let clean = new Set(egressWork.map((w) => w.name)).size === egressWork.length;
    for (const w of egressWork) {
      const warnings: Finding[] = [];
      const { plan, out, id, selected } = w;
      if (!plan.unique) clean = false;
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
      const contested4 = egress4.size > 0;
      const contested6 = egress6.size > 0;
      const one = selected.length === 1 ? selected[0] : undefined;
      for (const [cidr, ports, k] of prefixes) {
        let rule = k >= 0 ? plan.rules[k] : undefined;
        if (!rule) {
          const list = ports ? sortedPorts(ports) : [];
          if (list.length > NT_MAX_PORTS) {
            clean = false;
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
        const map = four ? egress4 : egress6;
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
            clean = false;
            warnings.push({
              reason: 'DestinationConflict',
              message: `${cidr.text} on ${i.name} is also claimed by policy "${nameOfId.get(prev[1].readUInt32LE(0))}", which wins (names sort first)`,
            });
            continue;
          }
          map.set(e.hex, e.entry);
        }
      }
      if (warnings.length > 0)
        out.warnings = [...out.warnings.slice(0, w.warningsAt), ...warnings, ...out.warnings.slice(w.warningsAt)];
    }
    return { clean, egress4: EntryTable.of(egress4), egress6: EntryTable.of(egress6) };
  }

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

  /** A policy's egress: its hooks now, its rules once every policy has been seen (egressTables). */
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
    egressWork.push({ name, id, out, selected, plan, warningsAt: out.warnings.length });
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
