/**
 * Timestamps in UTC, as RFC 3339 (what Kubernetes objects and the logs carry), formatted from a
 * Date's UTC fields. Node 20's `Date.prototype.toISOString` first looks up the host's time zone
 * and its display name through ICU, though its result is UTC: that brings some 0.9 MiB of the
 * Node binary's ICU data into the resident memory of every process that calls it once.
 */
const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** `d` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, what toISOString returns. */
export function isoTime(d: Date | number = Date.now()): string {
  const t = typeof d === 'number' ? new Date(d) : d;
  const year = t.getUTCFullYear();
  // Invalid dates throw as toISOString does; years it writes with six digits go to it.
  // eslint-disable-next-line no-restricted-properties
  if (!(year >= 0 && year <= 9999)) return t.toISOString();
  const ms = t.getUTCMilliseconds();
  return (
    `${String(year).padStart(4, '0')}-${pad2(t.getUTCMonth() + 1)}-${pad2(t.getUTCDate())}` +
    `T${pad2(t.getUTCHours())}:${pad2(t.getUTCMinutes())}:${pad2(t.getUTCSeconds())}.${String(ms).padStart(3, '0')}Z`
  );
}

/** `d` to the second, `YYYY-MM-DDTHH:MM:SSZ`: Kubernetes' metav1.Time. */
export function isoSeconds(d: Date | number = Date.now()): string {
  return `${isoTime(d).slice(0, -5)}Z`;
}
