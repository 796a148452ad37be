// The Events page, from the store: first the alerts (urgent, attention)
// nobody has acknowledged yet, each with an Acknowledge button, then the
// event log, newest first, a page at a time ("Older events" follows the
// cursor; nothing is cut silently). Events the live stream brings in since
// the page loaded are merged on top. The urgent and attention counts are the
// store's unacknowledged alerts, so a restarted daemon or a reload shows the
// same numbers.

import { useEffect, useState } from 'preact/hooks';
import { enc, get, LEVELS, post, type BbEvent, type EventLog, type Level, type StoredEvent } from '../api';
import { useEpoch, useEventRev, useLive } from '../live';
import { Empty, ErrorBox, LevelIcon, Link, Section, Time, useClock, useFetch, useThrottled } from '../ui';

const FILTER_KEY = 'moziplus.levels';
const ALERTS: Level[] = ['urgent', 'attention'];
const PAGE = 50;

function loadFilter(): Set<Level> {
  try {
    const v = JSON.parse(localStorage.getItem(FILTER_KEY) ?? 'null') as Level[] | null;
    if (Array.isArray(v)) return new Set(v.filter((l) => LEVELS.includes(l)));
  } catch {
    /* default below */
  }
  return new Set<Level>(['urgent', 'attention', 'daily']);
}

type Line = BbEvent & { acked_at?: string | null; acked_by?: string | null };
const key = (e: { project: string; id: number }) => `${e.project}:${e.id}`;
const isAlertEvent = (ev: BbEvent) => ALERTS.includes(ev.level) || ev.kind === 'event.acknowledged';

export function Events({ limit, project }: { limit?: number; project?: string }) {
  const live = useLive();
  const epoch = useEpoch();
  useClock(10000);
  const [levels, setLevels] = useState<Set<Level>>(loadFilter);
  const toggle = (l: Level) => {
    const next = new Set(levels);
    if (next.has(l)) next.delete(l);
    else next.add(l);
    setLevels(next);
    localStorage.setItem(FILTER_KEY, JSON.stringify([...next]));
  };
  const scope = project ? `&project=${enc(project)}` : '';

  // The alerts that need someone, first page (more on request).
  const alertRev = useThrottled(
    useEventRev((ev) => isAlertEvent(ev) && (!project || ev.project === project)),
    300,
  );
  const alerts = useFetch(`${project ?? '*'}:${alertRev}`, () =>
    get<EventLog>(`/api/events/log?unacked=1&limit=${limit ? 5 : 20}${scope}`),
  );
  const [moreAlerts, setMoreAlerts] = useState<StoredEvent[]>([]);
  const [alertCursor, setAlertCursor] = useState<string | null>(null);
  useEffect(() => {
    setMoreAlerts([]);
    setAlertCursor(alerts.data?.next_cursor ?? null);
  }, [alerts.data]);
  const loadMoreAlerts = async () => {
    if (!alertCursor) return;
    const r = await get<EventLog>(`/api/events/log?unacked=1&limit=20${scope}&cursor=${enc(alertCursor)}`);
    setMoreAlerts((xs) => [...xs, ...r.events]);
    setAlertCursor(r.next_cursor ?? null);
  };
  const [acked, setAcked] = useState<Set<string>>(new Set());
  const openAlerts = [...(alerts.data?.events ?? []), ...moreAlerts].filter((e) => !acked.has(key(e)));

  // The log at the chosen levels: the newest page, then older pages on request.
  const wanted = LEVELS.filter((l) => levels.has(l)).join(',');
  const first = useFetch(wanted ? `${project ?? '*'}:${wanted}:${epoch}` : null, () =>
    get<EventLog>(`/api/events/log?levels=${wanted}&limit=${limit ?? PAGE}${scope}`),
  );
  const [older, setOlder] = useState<StoredEvent[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  useEffect(() => {
    setOlder([]);
    setCursor(first.data?.next_cursor ?? null);
  }, [first.data]);
  const loadOlder = async () => {
    if (!cursor) return;
    setLoadingOlder(true);
    try {
      const r = await get<EventLog>(`/api/events/log?levels=${wanted}&limit=${PAGE}${scope}&cursor=${enc(cursor)}`);
      setOlder((xs) => [...xs, ...r.events]);
      setCursor(r.next_cursor ?? null);
    } finally {
      setLoadingOlder(false);
    }
  };

  // Stored pages plus what the stream brought since, newest first, once each.
  const byKey = new Map<string, Line>();
  for (const e of [...(first.data?.events ?? []), ...older]) byKey.set(key(e), e as Line);
  const oldestStored = first.data?.events.length ? Date.parse(first.data.events[first.data.events.length - 1].created_at) : 0;
  for (const e of live.feed) {
    if (byKey.has(key(e)) || !levels.has(e.level) || (project && e.project !== project)) continue;
    // Live events older than the loaded pages would leave a gap: skip them.
    if (cursor && Date.parse(e.created_at) < oldestStored) continue;
    byKey.set(key(e), e);
  }
  const shown = [...byKey.values()]
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || b.id - a.id)
    .slice(0, limit ?? Infinity);

  const unacked = alerts.data?.unacked;
  const counts: Record<Level, number | undefined> = {
    urgent: unacked ? unacked.urgent - [...acked].filter((k) => openAlertsLevel(k, alerts.data, moreAlerts) === 'urgent').length : undefined,
    attention: unacked ? unacked.attention - [...acked].filter((k) => openAlertsLevel(k, alerts.data, moreAlerts) === 'attention').length : undefined,
    daily: shown.filter((e) => e.level === 'daily').length,
    optional: shown.filter((e) => e.level === 'optional').length,
  };

  return (
    <>
      <Section
        title={`Unacknowledged alerts${unacked ? ` (${(counts.urgent ?? 0) + (counts.attention ?? 0)})` : ''}`}
        id="alerts"
      >
        <ErrorBox error={alerts.error} what="alerts" />
        {alerts.data && openAlerts.length === 0 && <Empty>No alert waits for acknowledgement.</Empty>}
        {openAlerts.length > 0 && (
          <ul class="feed" data-testid="alerts">
            {openAlerts.map((e) => (
              <EventLine key={key(e)} e={e as Line} onAcked={() => setAcked((s) => new Set(s).add(key(e)))} />
            ))}
          </ul>
        )}
        {alertCursor && !limit && (
          <p class="more">
            More unacknowledged alerts exist.{' '}
            <button class="small" onClick={loadMoreAlerts}>
              Show more
            </button>
          </p>
        )}
        {alertCursor && limit && (
          <p class="more">
            <Link href="/events">More unacknowledged alerts on the Events page</Link>
          </p>
        )}
      </Section>
      <Section
        title="Events"
        actions={
          <div class="filters" role="group" aria-label="Levels">
            {LEVELS.map((l) => (
              <button
                key={l}
                class={`chip l-${l}${levels.has(l) ? ' on' : ''}`}
                aria-pressed={levels.has(l)}
                onClick={() => toggle(l)}
                data-level={l}
                title={ALERTS.includes(l) ? `${l}: alerts nobody has acknowledged` : `${l}: events listed below`}
              >
                <LevelIcon level={l} /> {l} <span class="count">{counts[l] ?? '…'}</span>
              </button>
            ))}
          </div>
        }
      >
        <ErrorBox error={first.error} what="events" />
        {shown.length === 0 ? (
          <Empty>{levels.size === 0 ? 'No level selected.' : first.data ? 'No events at the selected levels.' : 'Loading…'}</Empty>
        ) : (
          <ul class="feed" data-testid="feed">
            {shown.map((e) => (
              <EventLine key={key(e)} e={e} />
            ))}
          </ul>
        )}
        {cursor && !limit && (
          <p class="more">
            <button class="small" onClick={loadOlder} disabled={loadingOlder} data-testid="older">
              {loadingOlder ? 'Loading…' : 'Older events'}
            </button>
          </p>
        )}
        {cursor && limit && (
          <p class="more">
            <Link href="/events">All events</Link>
          </p>
        )}
      </Section>
    </>
  );
}

/** The level of an acknowledged alert among those listed (for the counts). */
function openAlertsLevel(k: string, page: EventLog | undefined, more: StoredEvent[]): Level | undefined {
  return [...(page?.events ?? []), ...more].find((e) => key(e) === k)?.level;
}

function EventLine({ e, onAcked }: { e: Line; onAcked?: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const ack = async () => {
    setBusy(true);
    setError(null);
    try {
      await post<StoredEvent>(`/api/projects/${enc(e.project)}/events/${e.id}/ack`);
      onAcked?.();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li class={`ev l-${e.level}`} data-event={key(e)}>
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
      <span class="ev-detail muted">
        {summarize(e.payload)}
        {e.acked_by && <span class="acked"> · acknowledged by {e.acked_by}</span>}
        {error && <span class="error-inline"> · {error}</span>}
      </span>
      <span class="ev-end">
        {onAcked && (
          <button class="small" onClick={ack} disabled={busy} data-testid="ack">
            Acknowledge
          </button>
        )}
        <Time t={e.created_at} />
      </span>
    </li>
  );
}

function summarize(p: unknown): string {
  if (!p || typeof p !== 'object') return '';
  const o = p as Record<string, unknown>;
  const parts: string[] = [];
  if (typeof o.from === 'string' && typeof o.to === 'string') parts.push(`${o.from} → ${o.to}`);
  for (const k of ['title', 'reason', 'verdict', 'question', 'message', 'outcome', 'body']) {
    if (typeof o[k] === 'string' && o[k]) parts.push(String(o[k]));
  }
  const s = parts.join(' · ');
  return s.length > 140 ? `${s.slice(0, 137)}…` : s;
}
