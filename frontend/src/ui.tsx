// Small shared pieces: the router, data loading, badges.

import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ago, type Priority } from './api';
import { PRIORITY_COLOR } from './priority';

// ---- routing (history API; the daemon serves index.html for app paths) ----

const routeListeners = new Set<() => void>();

export function navigate(to: string) {
  if (to === location.pathname + location.search) return;
  history.pushState(null, '', to);
  routeListeners.forEach((l) => l());
  window.scrollTo(0, 0);
}

window.addEventListener('popstate', () => routeListeners.forEach((l) => l()));

export function useRoute(): string[] {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((n) => n + 1);
    routeListeners.add(l);
    return () => void routeListeners.delete(l);
  }, []);
  return location.pathname.split('/').filter(Boolean).map(decodeURIComponent);
}

export function Link(props: { href: string; class?: string; children: ComponentChildren; title?: string }) {
  return (
    <a
      href={props.href}
      class={props.class}
      title={props.title}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

// ---- data loading ----

export interface Loaded<T> {
  data: T | undefined;
  error: string | null;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads `fn()` whenever `key` changes; the previous data stays on screen while
 * a reload runs, so live refreshes do not flicker. Answers that arrive after
 * a newer request started are dropped.
 */
export function useFetch<T>(key: string | null, fn: () => Promise<T>): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [bump, setBump] = useState(0);
  const seq = useRef(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    if (key === null) return;
    const mine = ++seq.current;
    setLoading(true);
    fnRef.current().then(
      (d) => {
        if (mine !== seq.current) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (mine !== seq.current) return;
        setError(e instanceof Error ? e.message : String(e));
        setLoading(false);
      },
    );
  }, [key, bump]);
  return { data, error, loading, reload: () => setBump((n) => n + 1) };
}

/** Like `key`, but changes at most once per `ms` (live refetch throttle). */
export function useThrottled(key: string, ms = 400): string {
  const [v, setV] = useState(key);
  const last = useRef(0);
  useEffect(() => {
    const wait = Math.max(0, last.current + ms - Date.now());
    const t = window.setTimeout(() => {
      last.current = Date.now();
      setV(key);
    }, wait);
    return () => window.clearTimeout(t);
  }, [key]);
  return v;
}

/** Re-renders every `ms` so relative times stay true. */
/** Re-renders every `ms`; returns how many times it has (a fetch key). */
export function useClock(ms = 5000): number {
  const [n, set] = useState(0);
  useEffect(() => {
    const t = window.setInterval(() => set((n) => n + 1), ms);
    return () => window.clearInterval(t);
  }, [ms]);
  return n;
}

// ---- presentation ----

export function Badge(props: { kind: string; children?: ComponentChildren; title?: string }) {
  return (
    <span class={`badge b-${props.kind.replace(/[^a-z0-9_-]/gi, '')}`} title={props.title}>
      {props.children ?? props.kind}
    </span>
  );
}

/** A priority pill in the priority's colour (see priority.ts). */
export function PriorityPill(props: { p: Priority; children?: ComponentChildren }) {
  const c = PRIORITY_COLOR[props.p];
  return (
    <span
      class={`badge b-p-${props.p}`}
      data-priority={props.p}
      style={{ color: c, background: `color-mix(in srgb, ${c} 15%, transparent)` }}
    >
      {props.children ?? props.p}
    </span>
  );
}

export function Time(props: { t: string | null | undefined }) {
  return <time title={props.t ?? ''}>{ago(props.t)}</time>;
}

export function ErrorBox(props: { error: string | null; what?: string }) {
  if (!props.error) return null;
  return (
    <div class="error" role="alert">
      {props.what ? `${props.what}: ` : ''}
      {props.error}
    </div>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <p class="empty">{props.children}</p>;
}

export function Section(props: { title: ComponentChildren; actions?: ComponentChildren; children: ComponentChildren; id?: string }) {
  return (
    <section class="card" id={props.id}>
      <header class="card-head">
        <h2>{props.title}</h2>
        {props.actions && <div class="actions">{props.actions}</div>}
      </header>
      {props.children}
    </section>
  );
}

/** The four event levels' icons (inline SVG: no emoji font needed). */
export function LevelIcon({ level }: { level: string }) {
  const common = { width: 16, height: 16, viewBox: '0 0 16 16', 'aria-hidden': true, class: `lvl lvl-${level}` } as const;
  switch (level) {
    case 'urgent':
      return (
        <svg {...common}>
          <path d="M5 1h6l4 4v6l-4 4H5l-4-4V5z" fill="currentColor" />
          <path d="M8 4v5M8 11v1" stroke="#fff" stroke-width="2" stroke-linecap="round" />
        </svg>
      );
    case 'attention':
      return (
        <svg {...common}>
          <path d="M8 1.5l7 13H1z" fill="currentColor" />
          <path d="M8 6v4M8 12v.5" stroke="#fff" stroke-width="1.8" stroke-linecap="round" />
        </svg>
      );
    case 'daily':
      return (
        <svg {...common}>
          <circle cx="8" cy="8" r="7" fill="currentColor" />
          <path d="M4.5 8.2l2.3 2.3 4.7-4.7" stroke="#fff" stroke-width="1.8" fill="none" stroke-linecap="round" />
        </svg>
      );
    default:
      return (
        <svg {...common}>
          <path d="M2 3h12v8H7l-3 3v-3H2z" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linejoin="round" />
        </svg>
      );
  }
}
