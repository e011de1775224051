/**
 * The operator's leader-election identity. Apart from leader.ts so that parsing the
 * operator's flags loads no Kubernetes client.
 */
import { hostname } from 'node:os';

/** The identity of this candidate: the pod name in a cluster, else host name and process id. */
export function defaultIdentity(env: NodeJS.ProcessEnv = process.env): string {
  return env.POD_NAME || `${hostname()}_${process.pid}`;
}
