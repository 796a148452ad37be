// The live connection: one EventSource on /api/events (all four levels plus
// gateway snapshots) feeding a small store the views subscribe to.
//
// Liveness: the daemon sends `event: heartbeat` every 2 s, so 5 s without any
// frame means the link is gone and the "reconnecting" overlay shows. The
// browser reconnects by itself and resumes with Last-Event-ID; a stream the
// browser gave up on (HTTP error) is reopened here with backoff. On
// `event: resync` the views refetch and the stream is reopened at the cursor
// the daemon gave.
//
// Events carry their change: a `task.*` event has the task's row (`task`),
// which the board applies in place. Views that show what events do not carry
// (counts, decisions, a task's comments) refetch their own small resource
// when an event of a kind that changes it arrives (`useEventRev`); activity
// (`task.heartbeat`, `session.activity`) changes nothing a view lists, and
// only `resync` (or a reconnect after silence) refetches everything
// (`epoch`).

import { useEffect, useRef, useState } from 'preact/hooks';
import { get, type BbEvent, type GatewayStatus, type Project } from './api';

export const SILENCE_MS = 5000;
const FEED_MAX = 500;
const GATEWAY_POINTS = 600;
const BACKFILL_PER_PROJECT = 50;

export type LinkState = 'connecting' | 'live' | 'reconnecting' | 'unsupported';

export interface GatewayPoint { t: number; snap: GatewayStatus }

interface LiveState {
  link: LinkState;
  /** Newest first. */
  feed: BbEvent[];
  /** Bumped on resync and reconnect after silence: everything refetches. */
  epoch: number;
  gateway: GatewayPoint[];
  gatewayViaStream: boolean;
}

const state: LiveState = { link: 'connecting', feed: [], epoch: 0, gateway: [], gatewayViaStream: false };
const listeners = new Set<() => void>();
let notifyQueued = false;

function changed() {
  if (notifyQueued) return;
  notifyQueued = true;
  queueMicrotask(() => {
    notifyQueued = false;
    listeners.forEach((l) => l());
  });
}

/** Subscribes a component to the live store; re-renders on every change. */
export function useLive(): LiveState {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((n) => n + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return state;
}

/** Kinds that report liveness only: no view refetches for them. */
export const ACTIVITY = new Set(['task.heartbeat', 'session.activity']);

const eventListeners = new Set<(ev: BbEvent) => void>();

/** Calls `fn` (the latest one given) for every new event, once each. */
export function useEvents(fn: (ev: BbEvent) => void) {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    const l = (ev: BbEvent) => ref.current(ev);
    eventListeners.add(l);
    return () => void eventListeners.delete(l);
  }, []);
}

/** The resync counter; re-renders only when it changes. */
export function useEpoch(): number {
  const [epoch, setEpoch] = useState(state.epoch);
  useEffect(() => {
    const l = () => setEpoch(state.epoch);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return epoch;
}

/**
 * A key that changes on resync and whenever an event `matters` arrives: the
 * refetch key of a view whose data the events do not carry.
 */
export function useEventRev(matters: (ev: BbEvent) => boolean): string {
  const epoch = useEpoch();
  const [n, setN] = useState(0);
  useEvents((ev) => {
    if (matters(ev)) setN((x) => x + 1);
  });
  return `${epoch}:${n}`;
}

let es: EventSource | null = null;
let lastFrame = Date.now();
let retryDelay = 1000;
let reopenTimer: number | undefined;
let seen = new Set<string>();

function frame() {
  lastFrame = Date.now();
  retryDelay = 1000;
  if (state.link !== 'live') {
    if (state.link === 'reconnecting') state.epoch++;
    state.link = 'live';
    changed();
  }
}

function onEvent(ev: BbEvent) {
  const key = `${ev.project}:${ev.id}`;
  if (seen.has(key)) return;
  seen.add(key);
  state.feed = [ev, ...state.feed];
  if (state.feed.length > FEED_MAX) {
    const dropped = state.feed.splice(FEED_MAX);
    dropped.forEach((d) => seen.delete(`${d.project}:${d.id}`));
  }
  changed();
  eventListeners.forEach((l) => l(ev));
}

function pushGateway(snap: GatewayStatus, viaStream: boolean) {
  const pts = state.gateway.length >= GATEWAY_POINTS ? state.gateway.slice(1) : state.gateway.slice();
  pts.push({ t: Date.now() / 1000, snap });
  state.gateway = pts;
  state.gatewayViaStream = viaStream;
  changed();
}

function open(since?: string) {
  es?.close();
  const q = new URLSearchParams({ levels: 'urgent,attention,daily,optional', gateway: '1' });
  if (since) q.set('since', since);
  const src = new EventSource(`/api/events?${q}`);
  es = src;
  src.onopen = () => frame();
  src.onmessage = (m) => {
    frame();
    try {
      onEvent(JSON.parse(m.data) as BbEvent);
    } catch {
      /* a malformed frame is skipped; the next refetch covers it */
    }
  };
  src.addEventListener('heartbeat', () => frame());
  src.addEventListener('gateway', (m) => {
    frame();
    try {
      pushGateway(JSON.parse((m as MessageEvent).data) as GatewayStatus, true);
    } catch {
      /* skipped */
    }
  });
  src.addEventListener('resync', (m) => {
    let cursor: string | undefined;
    try {
      cursor = (JSON.parse((m as MessageEvent).data) as { cursor?: string }).cursor;
    } catch {
      /* reopen without a cursor */
    }
    state.epoch++;
    changed();
    open(cursor);
  });
  src.onerror = () => {
    // CONNECTING: the browser retries by itself. CLOSED: it gave up (an HTTP
    // error or a wrong content type); reopen with backoff, and find out
    // whether this daemon has an event stream at all.
    if (src.readyState === EventSource.CLOSED && es === src) scheduleReopen();
  };
}

function scheduleReopen() {
  window.clearTimeout(reopenTimer);
  reopenTimer = window.setTimeout(async () => {
    try {
      const ctrl = new AbortController();
      const r = await fetch('/api/events?levels=urgent', { signal: ctrl.signal });
      ctrl.abort();
      if (r.status === 404) {
        state.link = 'unsupported';
        changed();
        return;
      }
    } catch {
      /* the daemon is away: keep trying */
    }
    open();
  }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 10000);
}

/** The cursor that replays the last few events of every project. */
function backfillCursor(projects: Project[]): string | undefined {
  const parts = projects
    .filter((p) => typeof p.last_event_id === 'number')
    .map((p) => `${p.id}:${Math.max(0, p.last_event_id - BACKFILL_PER_PROJECT)}`);
  return parts.length ? parts.join(',') : undefined;
}

/** Starts the stream, the silence watchdog and the gateway polling fallback. */
export async function startLive() {
  let since: string | undefined;
  try {
    const r = await get<{ projects: Project[] }>('/api/projects');
    since = backfillCursor(r.projects);
  } catch {
    /* no project list: start at the current end */
  }
  open(since);
  window.setInterval(() => {
    const silent = Date.now() - lastFrame > SILENCE_MS;
    if (silent && state.link === 'live') {
      state.link = 'reconnecting';
      changed();
    }
    // A connection that is open but silent for long is half-dead: replace it.
    if (Date.now() - lastFrame > 3 * SILENCE_MS && es && es.readyState === EventSource.OPEN) {
      lastFrame = Date.now() - SILENCE_MS;
      open();
    }
  }, 500);
  // Gateway history also fills when the stream sends no gateway frames.
  window.setInterval(async () => {
    const last = state.gateway[state.gateway.length - 1];
    if (state.gatewayViaStream && last && Date.now() / 1000 - last.t < 3) return;
    try {
      pushGateway(await get<GatewayStatus>('/api/gateway/status'), false);
    } catch {
      /* gateway disabled or daemon away */
    }
  }, 2000);
  // Without an event stream, views still refresh by polling.
  window.setInterval(() => {
    if (state.link === 'unsupported') {
      state.epoch++;
      changed();
    }
  }, 3000);
}

/** Forgets the feed (used by tests of the view, and by "clear"). */
export function clearFeed() {
  state.feed = [];
  seen = new Set();
  changed();
}
