/**
 * API errors as one secret-free line. client-node's ApiException puts the whole response in its
 * message; these keep the HTTP status and the Status reason and message only.
 */
import { ApiException } from '@kubernetes/client-node';
import { describeError } from '../lib/kube.js';

/** The Status an API error carries: its reason and message, when the body is one. */
export function apiStatus(err: ApiException<unknown>): { reason?: string; message?: string } {
  try {
    const s = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { reason?: unknown; message?: unknown } | null;
    return {
      reason: typeof s?.reason === 'string' ? s.reason : undefined,
      message: typeof s?.message === 'string' ? s.message.slice(0, 500) : undefined,
    };
  } catch {
    return {};
  }
}

/** One line for an API error: HTTP status, reason and the API server's message. */
export function apiErrorText(err: ApiException<unknown>): string {
  const s = apiStatus(err);
  return `HTTP ${err.code}${s.reason ? ` ${s.reason}` : ''}${s.message ? `: ${s.message}` : ''}`;
}

/** An error about a Secret call: the Secret's name, HTTP status and reason, and nothing from the body beyond that. */
export function secretError(what: string, name: string, err: unknown): Error {
  if (!(err instanceof ApiException)) return new Error(`${what} Secret "${name}" failed: ${describeError(err)}`);
  const reason = apiStatus(err).reason;
  return new Error(`${what} Secret "${name}" failed: HTTP ${err.code}${reason ? ` ${reason}` : ''}`);
}

/** One line for any error, API or not. */
export function errorText(err: unknown): string {
  return err instanceof ApiException ? apiErrorText(err) : describeError(err);
}
