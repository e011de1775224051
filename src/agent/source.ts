/**
 * Where the agent's policies come from: a policy file (standalone) or the API
 * server (cluster). Both produce the same Snapshot for the same reconcile core.
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
