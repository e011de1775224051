/**
 * Standalone policy source: one multi-document YAML file holding TokenPolicy objects
 * and the Secrets with their keys, exactly what `kubectl apply -f` would take.
 * A document that fails validation is reported and the policy it names keeps its
 * last good version; a file that is not valid YAML changes nothing; a Secret document
 * that goes away or stops holding a key leaves the keys read before in use (reported as
 * SecretUnavailable). Error messages never quote the file: it holds keys.
 */
import { readFileSync, statSync, unwatchFile, watchFile } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import type { Logger } from '../lib/log.js';
import type { TokenKeys, TokenPolicy } from '../lib/types.js';
import { type DocumentError, type PolicySource, type Snapshot, keptOrFresh } from './source.js';

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
    // prettyErrors off: a pretty error quotes the offending line, which may hold a key.
    docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    out.errors.push({ where: base, message: yamlMessage(err as Error, text) });
    out.fatal = true;
    return out;
  }
  if (!Array.isArray(docs)) docs = [docs];
  docs.forEach((doc, i) => {
    const where = `${base} document ${i + 1}`;
    if (doc.errors.length) {
      const e = doc.errors[0];
      out.errors.push({ where, message: `invalid YAML: ${e ? yamlMessage(e, text) : 'unknown error'}` });
      out.fatal = true;
      return;
    }
    let obj: unknown;
    try {
      // Aliases are resolved here; an alias without its anchor, or an alias bomb, throws.
      obj = doc.toJS({ maxAliasCount: 100 }) as unknown;
    } catch (err) {
      // The parser's message names the alias, which is text from the file: leave it out.
      out.errors.push({
        where,
        message: `invalid YAML: the document cannot be read as data (${(err as Error).name}: an alias without its anchor, or too many aliases)`,
      });
      out.fatal = true;
      return;
    }
    if (obj === null || obj === undefined) return; // empty document
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      out.errors.push({ where, message: 'must be a Kubernetes object (a mapping with apiVersion and kind)' });
      return;
    }
    const o = obj as Obj;
    const name = typeof (o.metadata as Obj | undefined)?.name === 'string' ? ((o.metadata as Obj).name as string) : undefined;
    if (o.kind === 'Secret') {
      if (o.apiVersion !== 'v1')
        out.errors.push({ where, message: `apiVersion must be v1 for a Secret, got ${JSON.stringify(o.apiVersion)}` });
      else if (!name) out.errors.push({ where, message: 'metadata.name: is required' });
      else if (out.secrets.has(name))
        out.errors.push({ where: `${where} (Secret "${name}")`, message: 'a Secret with this name appears earlier in the file' });
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
        out.errors.push({
          where: `${where} (TokenPolicy "${p.metadata.name}")`,
          message: 'a TokenPolicy with this name appears earlier in the file',
        });
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

/**
 * Codes of YAML errors whose messages are fixed text. The others quote the document (a tag,
 * an escape, a token, a directive), and a policy file holds keys: for those only a
 * description of the code is shown.
 */
const FIXED_TEXT_CODES = new Set([
  'BAD_INDENT',
  'DUPLICATE_KEY',
  'MISSING_CHAR',
  'MULTILINE_IMPLICIT_KEY',
  'TAB_AS_INDENT',
  'BLOCK_AS_IMPLICIT_KEY',
  'BLOCK_IN_FLOW',
  'KEY_OVER_1024_CHARS',
  'MULTIPLE_ANCHORS',
  'MULTIPLE_TAGS',
  'MULTIPLE_DOCS',
  'NON_STRING_KEY',
  'ALIAS_PROPS',
  'BAD_ALIAS',
]);
const CODE_TEXT: Record<string, string> = {
  UNEXPECTED_TOKEN: 'unexpected token',
  BAD_DQ_ESCAPE: 'invalid escape sequence in a double-quoted string',
  TAG_RESOLVE_FAILED: 'a tag that cannot be resolved',
  BAD_PROP_ORDER: 'an anchor or tag in the wrong place',
  BAD_SCALAR_START: 'a plain value that starts with a character it cannot start with',
  BAD_DIRECTIVE: 'an unknown or unsupported directive',
  BAD_COLLECTION_TYPE: 'a tag for another kind of collection',
};

/** A YAML error as one line with its position, never quoting the document. */
function yamlMessage(e: Error & { code?: string; pos?: [number, number] }, source: string): string {
  const code = e.code ?? '';
  const text = FIXED_TEXT_CODES.has(code)
    ? (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?\s*$/, '')
    : (CODE_TEXT[code] ?? 'a syntax error');
  let at = '';
  if (e.pos && e.pos[0] >= 0 && e.pos[0] <= source.length) {
    const before = source.slice(0, e.pos[0]).split('\n');
    at = ` at line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`;
  }
  return `${text}${at}${code ? ` (${code})` : ''}`;
}

export class FileSource implements PolicySource {
  private current: Snapshot;
  private generations = new Map<string, { spec: string; generation: number }>();
  /** policy name -> the keys last read for it (kept while its Secret document is gone or broken) */
  private lastKeys = new Map<string, { secret: string; mode: string; keys: TokenKeys }>();
  private warnedMode = false;
  private onChange: (() => void) | undefined;
  /** the read that waits for the file to stay unchanged (changed()) */
  private settle: NodeJS.Timeout | undefined;
  /** when the file began changing, while it has not yet settled */
  private changingSince = 0;

  constructor(
    private readonly file: string,
    private readonly nodeLabels: Record<string, string>,
    private readonly log: Logger,
    private readonly pollMs = 500,
    private readonly settleMs = 200,
  ) {
    this.current = { policies: [], keys: new Map(), nodeLabels, documentErrors: [] };
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    this.reload();
    watchFile(this.file, { interval: this.pollMs, persistent: false }, () => this.changed());
  }

  stop(): void {
    unwatchFile(this.file);
    if (this.settle) clearTimeout(this.settle);
    this.settle = undefined;
    this.onChange = undefined;
  }

  /**
   * The file changed: it is read once it has stayed the same for `settleMs` (or, should it never
   * stop changing, after 10 times that). A file rewritten in place (`cat > file`, an editor's
   * in-place save) is empty or half-written for a moment; a poll in that moment that took it as
   * it was would remove every policy until the next poll: SYNs leave unmarked, and a port under
   * Enforce is unprotected.
   */
  private changed(again = false): void {
    if (this.settle) clearTimeout(this.settle);
    else if (!again) this.changingSince = Date.now();
    const seen = this.stamp();
    this.settle = setTimeout(() => {
      this.settle = undefined;
      if (this.stamp() !== seen && Date.now() - this.changingSince < 10 * this.settleMs) {
        this.changed(true);
        return;
      }
      // Whatever the file holds, the agent must not die of it: a reload that throws is reported.
      try {
        this.reload();
      } catch (err) {
        this.log.error('reading the policy file failed; nothing changed', { file: this.file, error: (err as Error).name });
        return;
      }
      this.onChange?.();
    }, this.settleMs);
    this.settle.unref();
  }

  /** What tells one version of the file from the next without reading it. */
  private stamp(): string {
    try {
      const st = statSync(this.file);
      return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (err) {
      return `unreadable:${(err as NodeJS.ErrnoException).code ?? ''}`;
    }
  }

  snapshot(): Snapshot {
    return this.current;
  }

  /** The file holds keys: say so once when others than its owner may read it. */
  private checkMode(): void {
    const mode = statSync(this.file).mode & 0o777;
    if ((mode & 0o077) === 0) {
      this.warnedMode = false;
      return;
    }
    if (this.warnedMode) return;
    this.warnedMode = true;
    this.log.warn('the policy file holds token keys but others than its owner may read it; chmod 600 it', {
      file: this.file,
      mode: `0${mode.toString(8)}`,
    });
  }

  /** Re-read the file; keeps last good policies for documents that became invalid. */
  reload(): void {
    let text: string;
    try {
      this.checkMode();
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
      let got: TokenKeys | Error;
      if (!secret) {
        got = new Error(
          `Secret "${p.spec.token.secretRef.name}" named by spec.token.secretRef is not in ${path.basename(this.file)}`,
        );
      } else {
        try {
          got = decodeKeys(secret, p.spec.token.mode, path.basename(this.file));
        } catch (err) {
          got = err as Error;
        }
      }
      keys.set(p.metadata.name, keptOrFresh(this.lastKeys, p, got));
    }
    for (const name of [...this.generations.keys()]) if (!policies.has(name)) this.generations.delete(name);
    for (const name of [...this.lastKeys.keys()]) if (!policies.has(name)) this.lastKeys.delete(name);
    this.current = { policies: [...policies.values()], keys, nodeLabels: this.nodeLabels, documentErrors: parsed.errors };
  }
}
