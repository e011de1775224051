/**
 * YAML for the objects tests apply to an API server or write to a policy file, one builder per
 * kind, so that a test names only what differs (a name, labels, a key, a spec). Flow style, as a
 * person writes it by hand; the API server and the agent's policy file read the same text.
 */
import { API } from '../../src/lib/types.js';

/** Documents as one YAML stream, each as written (a broken one stays broken). */
export function yamlStream(docs: readonly string[]): string {
  return docs.map((d) => (d.endsWith('\n') ? d : d + '\n')).join('---\n');
}

function flowMap(entries: Record<string, string>): string {
  return `{${Object.entries(entries)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ')}}`;
}

function metadata(name: string, namespace?: string, labels?: Record<string, string>): string {
  const m: Record<string, string> = { name };
  if (namespace !== undefined) m.namespace = namespace;
  if (labels && Object.keys(labels).length > 0) m.labels = flowMap(labels);
  return `metadata: ${flowMap(m)}`;
}

export function namespaceYaml(name: string): string {
  return `apiVersion: v1\nkind: Namespace\n${metadata(name)}\n`;
}

/** A Node object (no kubelet behind it): what a TokenPolicy's nodeSelector matches. */
export function nodeYaml(name: string, labels: Record<string, string> = {}): string {
  return `apiVersion: v1\nkind: Node\n${metadata(name, undefined, labels)}\n`;
}

export interface SecretOptions {
  /** omitted in a policy file, where a Secret has no namespace */
  namespace?: string;
  labels?: Record<string, string>;
}

/** A Secret holding keys (`current`, `previous`, ...), base64 as the API server keeps them. */
export function keySecret(name: string, keys: Record<string, Buffer>, opts: SecretOptions = {}): string {
  return rawSecret(
    name,
    `data: ${flowMap(Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, v.toString('base64')])))}`,
    opts,
  );
}

/** A Secret whose `data` block is written as given: for data that must be refused (not base64, broken YAML). */
export function rawSecret(name: string, data: string, opts: SecretOptions = {}): string {
  return `apiVersion: v1\nkind: Secret\n${metadata(name, opts.namespace, opts.labels)}\ntype: Opaque\n${data}\n`;
}

/** A TokenPolicy; `spec` is its YAML body (one field a line, flow style within), indented under spec here. */
export function tokenPolicy(name: string, spec: string): string {
  return `apiVersion: ${API}\nkind: TokenPolicy\n${metadata(name)}\nspec:\n${spec.trimEnd().replace(/^/gm, '  ')}\n`;
}
