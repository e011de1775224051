/**
 * What a PromQL expression asks of the metrics (parsed with the grammar Prometheus's own UI
 * uses), and what a /metrics page offers: to check dashboards and alerts against the series
 * real processes export.
 */
import { parser } from '@prometheus-io/lezer-promql';
import type { SyntaxNode } from '@lezer/common';

export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
}

export interface Selector {
  metric: string;
  matchers: Matcher[];
}

export interface ExprNeeds {
  /** syntax errors, with the text around them */
  errors: string[];
  selectors: Selector[];
  /** label names in by / without / on / ignoring / group_left / group_right */
  groupingLabels: string[];
}

function unquote(s: string): string {
  if (s.startsWith('`')) return s.slice(1, -1);
  return JSON.parse(s.startsWith("'") ? `"${s.slice(1, -1).replace(/"/g, '\\"')}"` : s) as string;
}

/** The selectors and grouping labels of a PromQL expression. */
export function exprNeeds(expr: string): ExprNeeds {
  const tree = parser.parse(expr);
  const out: ExprNeeds = { errors: [], selectors: [], groupingLabels: [] };
  const text = (n: SyntaxNode): string => expr.slice(n.from, n.to);
  tree.iterate({
    enter(ref) {
      if (ref.type.isError) {
        out.errors.push(`syntax error at ${ref.from}: …${expr.slice(Math.max(0, ref.from - 20), ref.from + 20)}…`);
        return;
      }
      if (ref.name === 'VectorSelector') {
        const n = ref.node;
        const id = n.getChild('Identifier');
        const sel: Selector = { metric: id ? text(id) : '', matchers: [] };
        for (const m of n.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []) {
          const name = m.getChild('LabelName');
          const op = m.getChild('MatchOp');
          const value = m.getChild('StringLiteral');
          if (name && op && value)
            sel.matchers.push({ label: text(name), op: text(op) as Matcher['op'], value: unquote(text(value)) });
        }
        out.selectors.push(sel);
        return false;
      }
      if (ref.name === 'GroupingLabels') {
        for (const l of ref.node.getChildren('LabelName')) out.groupingLabels.push(text(l));
      }
      return undefined;
    },
  });
  return out;
}

/** For each metric of a /metrics page: its label names and the values each label takes. */
export type Inventory = Map<string, Map<string, Set<string>>>;

/** Adds the samples of a Prometheus text exposition to an inventory. */
export function addExposition(inv: Inventory, text: string): Inventory {
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels = inv.get(m[1] as string) ?? new Map<string, Set<string>>();
    inv.set(m[1] as string, labels);
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = labels.get(l[1] as string) ?? new Set<string>();
      values.add((l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)));
      labels.set(l[1] as string, values);
    }
  }
  return inv;
}
