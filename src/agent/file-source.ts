/**
 * Standalone policy source: one multi-document YAML file holding TokenPolicy objects
 * and the Secrets with their keys, exactly what `kubectl apply -f` would take.
 * A document that fails validation is reported and the policy it names keeps its
 * last good version; a file that is not valid YAML changes nothing.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import type { Logger } from '../lib/log.js';
import type { TokenKeys, TokenPolicy } from '../lib/types.js';
import type { DocumentError, PolicySource, Snapshot } from './source.js';

type Obj = Record<string, unknown>;

export interface ParsedFile {
  policies: Map<string, TokenPolicy>;
  secrets: Map<string, Obj>;
  errors: DocumentError[];
  /** names of TokenPolicy documents that were present but invalid */
  invalidPolicyNames: Set<string>;
  /** the YAML itself could not be read */
  fatal: boolean;
}

/** Parse and validate a policy file's text; never throws. */
export function parsePolicyFile(text: string, file: string): ParsedFile {
  const out: ParsedFile = { policies: new Map(), secrets: new Map(), errors: [], invalidPolicyNames: new Set(), fatal: false };
  const base = path.basename(file);
  let docs;
  try {
    docs = parseAllDocuments(text, { uniqueKeys: true });
  } catch (err) {
    out.errors.push({ where: base, message: (err as Error).message });
    out.fatal = true;
    return out;
  }
  if (!Array.isArray(docs)) docs = [docs];
  docs.forEach((doc, i) => {
    const where = `${base} document ${i + 1}`;
    if (doc.errors.length) {
      const e = doc.errors[0];
      out.errors.push({ where, message: `invalid YAML: ${e?.message ?? 'unknown error'}` });
      out.fatal = true;
      return;
    }
    const obj = doc.toJS() as unknown;
    if (obj === null || obj === undefined) return; // empty document
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      out.errors.push({ where, message: 'must be a Kubernetes object (a mapping with apiVersion and kind)' });
      return;
    }
    const o = obj as Obj;
    const name = typeof (o.metadata as Obj | undefined)?.name === 'string' ? ((o.metadata as Obj).name as string) : undefined;
    if (o.kind === 'Secret') {
      if (o.apiVersion !== 'v1') out.errors.push({ where, message: `apiVersion must be v1 for a Secret, got ${JSON.stringify(o.apiVersion)}` });
      else if (!name) out.errors.push({ where, message: 'metadata.name: is required' });
      else if (out.secrets.has(name)) out.errors.push({ where: `${where} (Secret "${name}")`, message: 'a Secret with this name appears earlier in the file' });
      else out.secrets.set(name, o);
      return;
    }
    if (o.kind !== 'TokenPolicy') {
      out.errors.push({ where, message: `kind must be TokenPolicy or Secret, got ${JSON.stringify(o.kind)}` });
      return;
    }
    try {
      const p = validatePolicy(o, where);
      if (out.policies.has(p.metadata.name)) {
        out.errors.push({ where: `${where} (TokenPolicy "${p.metadata.name}")`, message: 'a TokenPolicy with this name appears earlier in the file' });
        return;
      }
      // Standalone files have no generation: count edits ourselves (see FileSource).
      out.policies.set(p.metadata.name, p);
    } catch (err) {
      if (err instanceof PolicyError) {
        out.errors.push({ where: err.object, message: err.detail });
      } else {
        out.errors.push({ where, message: (err as Error).message });
      }
      if (name) out.invalidPolicyNames.add(name);
    }
  });
  return out;
}

export class FileSource implements PolicySource {
  private current: Snapshot;
  private generations = new Map<string, { spec: string; generation: number }>();
  private onChange: (() => void) | undefined;

  constructor(
    private readonly file: string,
    private readonly nodeLabels: Record<string, string>,
    private readonly log: Logger,
    private readonly pollMs = 500,
  ) {
    this.current = { policies: [], keys: new Map(), nodeLabels, documentErrors: [] };
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    this.reload();
    watchFile(this.file, { interval: this.pollMs, persistent: false }, () => {
      this.reload();
      this.onChange?.();
    });
  }

  stop(): void {
    unwatchFile(this.file);
    this.onChange = undefined;
  }

  snapshot(): Snapshot {
    return this.current;
  }

  /** Re-read the file; keeps last good policies for documents that became invalid. */
  reload(): void {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      const msg = `cannot read the policy file: ${(err as Error).message}`;
      this.log.error(msg, { file: this.file });
      this.current = { ...this.current, documentErrors: [{ where: path.basename(this.file), message: msg }] };
      return;
    }
    const parsed = parsePolicyFile(text, this.file);
    for (const e of parsed.errors) this.log.error(e.message, { document: e.where });
    if (parsed.fatal) {
      // Half-written or broken YAML: keep everything as it was.
      this.current = { ...this.current, documentErrors: parsed.errors };
      return;
    }
    const policies = new Map(parsed.policies);
    for (const name of parsed.invalidPolicyNames) {
      const last = this.current.policies.find((p) => p.metadata.name === name);
      if (last && !policies.has(name)) policies.set(name, last);
    }
    const keys = new Map<string, TokenKeys | Error>();
    for (const p of policies.values()) {
      // generation: bumped whenever the spec text changes, like the API server does
      const spec = JSON.stringify(p.spec);
      const g = this.generations.get(p.metadata.name);
      const generation = !g ? 1 : g.spec === spec ? g.generation : g.generation + 1;
      this.generations.set(p.metadata.name, { spec, generation });
      p.metadata.generation = generation;
      const secret = parsed.secrets.get(p.spec.token.secretRef.name);
      if (!secret) {
        keys.set(p.metadata.name, new Error(`Secret "${p.spec.token.secretRef.name}" named by spec.token.secretRef is not in ${path.basename(this.file)}`));
        continue;
      }
      try {
        keys.set(p.metadata.name, decodeKeys(secret, p.spec.token.mode, path.basename(this.file)));
      } catch (err) {
        keys.set(p.metadata.name, err as Error);
      }
    }
    for (const name of [...this.generations.keys()]) if (!policies.has(name)) this.generations.delete(name);
    this.current = { policies: [...policies.values()], keys, nodeLabels: this.nodeLabels, documentErrors: parsed.errors };
  }
}
