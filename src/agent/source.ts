/**
 * Where the agent's policies come from: a policy file (standalone) or the API
 * server (cluster). Both produce the same Snapshot for the same reconcile core, and both
 * keep the keys read last for a policy whose Secret can no longer be read (keptOrFresh).
 */
import type { TokenKeys, TokenPolicy } from '../lib/types.js';

export interface DocumentError {
  /** e.g. "policy.yaml document 2 (TokenPolicy \"web\")" */
  where: string;
  message: string;
}

export interface Snapshot {
  policies: TokenPolicy[];
  /** key material per policy name, or why it could not be read (never the key itself in messages) */
  keys: Map<string, TokenKeys | Error>;
  nodeLabels: Record<string, string>;
  /** input that was rejected; policies it names keep their last good version */
  documentErrors: DocumentError[];
}

export interface PolicySource {
  /** Load once and start watching; onChange is called (without arguments) after every change. */
  start(onChange: () => void): Promise<void>;
  snapshot(): Snapshot;
  /** false until the source has read its input once; the agent leaves the kernel alone until then */
  isSynced?(): boolean;
  stop(): void;
}

/**
 * Keys a source still holds for a policy whose Secret can no longer be read (deleted, or
 * holding something that is not a key): the policy keeps working with them and reports why.
 * `problem` names the Secret and what is wrong with it, never its content.
 */
export interface KeptKeys extends TokenKeys {
  problem: string;
}

/**
 * Remember keys that were read; when they cannot be read any more, hand out the last ones
 * read for the same Secret and mode, marked with the reason (never a key's content).
 */
export function keptOrFresh(
  last: Map<string, { secret: string; mode: string; keys: TokenKeys }>,
  p: TokenPolicy,
  got: TokenKeys | Error,
): TokenKeys | Error {
  const secret = p.spec.token.secretRef.name;
  const mode = p.spec.token.mode;
  if (!(got instanceof Error)) {
    last.set(p.metadata.name, { secret, mode, keys: got });
    return got;
  }
  const before = last.get(p.metadata.name);
  if (!before || before.secret !== secret || before.mode !== mode) return got;
  const kept: KeptKeys = { ...before.keys, problem: got.message };
  return kept;
}

/** The problem a source recorded with keys it kept, if these are kept keys. */
export function keptKeysProblem(k: TokenKeys | Error | undefined): string | undefined {
  return k && !(k instanceof Error) && typeof (k as Partial<KeptKeys>).problem === 'string' ? (k as KeptKeys).problem : undefined;
}
