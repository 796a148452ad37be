// A project's task list kept current from the events' task rows: the order
// is the task API's (priority, then the id's number), a row replaces the one
// it is newer than, and a list cut short by the page limit only takes rows
// that sort within what it holds (as a fresh load would).

import type { Priority, Task } from './api';

const RANK: Record<Priority, number> = { urgent: 1, high: 2, normal: 3, low: 4 };

/** The number in a task id (`T-0042` → 42): the API's `seq`. */
function seq(id: string): number {
  return Number(id.slice(id.indexOf('-') + 1));
}

/** The task API's order: most urgent first, then oldest. */
export function taskOrder(a: Task, b: Task): number {
  return RANK[a.priority] - RANK[b.priority] || seq(a.id) - seq(b.id);
}

/** Whether `t` is at least as new as `old` (ties go to the later arrival). */
export function isNewer(t: Task, old: Task | undefined): boolean {
  return !old || Date.parse(t.updated_at) >= Date.parse(old.updated_at);
}

/**
 * `list` with `t` in place: replaced where it is (or moved, when its priority
 * changed), or inserted at its position. Returns `list` itself when nothing
 * changes (an older row, or a row beyond the end of an incomplete list).
 */
export function upsertTask(list: Task[], t: Task, complete: boolean): Task[] {
  const i = list.findIndex((x) => x.id === t.id);
  if (i >= 0) {
    if (!isNewer(t, list[i])) return list;
    if (list[i].priority === t.priority) {
      const out = list.slice();
      out[i] = t;
      return out;
    }
    list = list.slice(0, i).concat(list.slice(i + 1));
  }
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (taskOrder(list[mid], t) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (!complete && lo === list.length && i < 0) return list;
  const out = list.slice();
  out.splice(lo, 0, t);
  return out;
}
