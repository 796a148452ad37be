// One colour per task priority, the only definition: the pills (`PriorityPill`
// in ui.tsx) and the charts (the Gateway's queue depth) both read it, so a
// priority looks the same everywhere.

import type { Priority } from './api';

/** Most urgent first. */
export const PRIORITIES: Priority[] = ['urgent', 'high', 'normal', 'low'];

export const PRIORITY_COLOR: Record<Priority, string> = {
  urgent: '#d93036',
  high: '#c77c02',
  normal: '#4f7cff',
  low: '#8a94a6',
};
