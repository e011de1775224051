/**
 * Errors about key Secrets as one secret-free line: the Secret's name, HTTP status and
 * reason, and nothing from the response body beyond that.
 */
import { ApiException } from '../lib/kube-client.js';
import { apiStatus, describeError } from '../lib/kube.js';

/** An error about a Secret call: the Secret's name, HTTP status and reason, and nothing from the body beyond that. */
export function secretError(what: string, name: string, err: unknown): Error {
  if (!(err instanceof ApiException)) return new Error(`${what} Secret "${name}" failed: ${describeError(err)}`);
  const reason = apiStatus(err).reason;
  return new Error(`${what} Secret "${name}" failed: HTTP ${err.code}${reason ? ` ${reason}` : ''}`);
}
