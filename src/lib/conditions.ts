/**
 * Kubernetes conditions, set through one helper: a condition is found by type (never
 * by position) and lastTransitionTime moves only when status changes.
 */
import { by } from './order.js';
import { isoSeconds } from './time.js';

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** Returns a new list with `next` set; keeps lastTransitionTime when the status did not change. */
export function setCondition(
  list: readonly Condition[],
  next: Omit<Condition, 'lastTransitionTime'>,
  now = new Date(),
): Condition[] {
  const prev = list.find((c) => c.type === next.type);
  const cond: Condition = {
    ...next,
    lastTransitionTime: prev && prev.status === next.status ? prev.lastTransitionTime : isoSeconds(now),
  };
  return [...list.filter((c) => c.type !== next.type), cond].sort(by((x) => x.type));
}

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return (list ?? []).find((c) => c.type === type);
}
