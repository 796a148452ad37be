// The event feed: every blackboard event from the live stream, newest first,
// with the four levels (urgent, attention, daily, optional) as filters.

import { useState } from 'preact/hooks';
import { LEVELS, type BbEvent, type Level } from '../api';
import { clearFeed, useLive } from '../live';
import { Empty, LevelIcon, Link, Section, Time, useClock } from '../ui';

const FILTER_KEY = 'moziplus.levels';

function loadFilter(): Set<Level> {
  try {
    const v = JSON.parse(localStorage.getItem(FILTER_KEY) ?? 'null') as Level[] | null;
    if (Array.isArray(v)) return new Set(v.filter((l) => LEVELS.includes(l)));
  } catch {
    /* default below */
  }
  return new Set<Level>(['urgent', 'attention', 'daily']);
}

export function Events({ limit, project }: { limit?: number; project?: string }) {
  const live = useLive();
  useClock(10000);
  const [levels, setLevels] = useState<Set<Level>>(loadFilter);
  const toggle = (l: Level) => {
    const next = new Set(levels);
    if (next.has(l)) next.delete(l);
    else next.add(l);
    setLevels(next);
    localStorage.setItem(FILTER_KEY, JSON.stringify([...next]));
  };
  const counts = Object.fromEntries(LEVELS.map((l) => [l, 0])) as Record<Level, number>;
  for (const e of live.feed) if (!project || e.project === project) counts[e.level] = (counts[e.level] ?? 0) + 1;
  const shown = live.feed.filter((e) => levels.has(e.level) && (!project || e.project === project)).slice(0, limit ?? 500);
  return (
    <Section
      title="Events"
      actions={
        <>
          <div class="filters" role="group" aria-label="Levels">
            {LEVELS.map((l) => (
              <button
                key={l}
                class={`chip l-${l}${levels.has(l) ? ' on' : ''}`}
                aria-pressed={levels.has(l)}
                onClick={() => toggle(l)}
                data-level={l}
              >
                <LevelIcon level={l} /> {l} <span class="count">{counts[l]}</span>
              </button>
            ))}
          </div>
          {!limit && (
            <button class="small" onClick={clearFeed}>
              Clear
            </button>
          )}
        </>
      }
    >
      {shown.length === 0 ? (
        <Empty>
          {live.feed.length === 0 ? 'No events yet: they appear here as they happen.' : 'No events at the selected levels.'}
        </Empty>
      ) : (
        <ul class="feed" data-testid="feed">
          {shown.map((e) => (
            <EventLine key={`${e.project}:${e.id}`} e={e} />
          ))}
        </ul>
      )}
    </Section>
  );
}

function EventLine({ e }: { e: BbEvent }) {
  return (
    <li class={`ev l-${e.level}`}>
      <span class="icon" title={e.level} aria-label={e.level}>
        <LevelIcon level={e.level} />
      </span>
      <span class="ev-kind">{e.kind.replace(/_/g, ' ')}</span>
      <span class="ev-where">
        <Link href={`/projects/${e.project}`}>{e.project}</Link>
        {e.task_id && (
          <>
            {' / '}
            <Link href={`/projects/${e.project}/tasks/${e.task_id}`}>{e.task_id}</Link>
          </>
        )}
      </span>
      <span class="ev-actor muted">{e.actor}</span>
      <span class="ev-detail muted">{summarize(e.payload)}</span>
      <Time t={e.created_at} />
    </li>
  );
}

function summarize(p: unknown): string {
  if (!p || typeof p !== 'object') return '';
  const o = p as Record<string, unknown>;
  const parts: string[] = [];
  if (typeof o.from === 'string' && typeof o.to === 'string') parts.push(`${o.from} → ${o.to}`);
  for (const k of ['title', 'reason', 'verdict', 'question', 'message', 'outcome']) {
    if (typeof o[k] === 'string' && o[k]) parts.push(String(o[k]));
  }
  const s = parts.join(' · ');
  return s.length > 140 ? `${s.slice(0, 137)}…` : s;
}
