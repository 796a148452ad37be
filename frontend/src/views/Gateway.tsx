// The gateway panel: per provider the requests available, effective vs base
// rate, retreat state, the in-flight limit and why, the key pool, queue depth
// per priority, 429 ratio and breaker state; the daemon's admission by quota
// (committed demand against capacity, tasks held back and why); with charts
// over time from the stored history (`/api/gateway/history`: one sample per
// lane every 10 s, kept 24 h) continued by the stream's `event: gateway`
// snapshots (or polling), so a reload keeps the past.

import { useEffect, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { Chart, color, type SeriesSpec } from '../chart';
import { get, type GatewayHistory, type GatewaySample, type GatewayStatus, type Priority, type ProviderStatus } from '../api';
import { PRIORITIES, PRIORITY_COLOR } from '../priority';
import { useEpoch, useLive, type GatewayPoint } from '../live';
import { Badge, Empty, Link, PriorityPill, Section } from '../ui';


/** How far back the charts start. */
const WINDOWS: { label: string; seconds: number }[] = [
  { label: '15 min', seconds: 900 },
  { label: '1 h', seconds: 3600 },
  { label: '6 h', seconds: 6 * 3600 },
  { label: '24 h', seconds: 86400 },
];

/** One lane at one moment, from a stored sample or a live snapshot. */
interface LanePoint {
  tokens: number; in_flight: number; concurrency: number; eff: number; base: number;
  ratio_429: number | null; queue: Record<Priority, number>;
  /** Per 10 s; stored samples only. */
  requests?: number; errors?: number;
}
interface Pt { t: number; lanes: Record<string, LanePoint> }

function fromSamples(samples: GatewaySample[]): Pt[] {
  const byT = new Map<number, Pt>();
  for (const s of samples) {
    const t = s.at_ms / 1000;
    const pt = byT.get(t) ?? { t, lanes: {} };
    pt.lanes[s.provider] = {
      tokens: s.tokens, in_flight: s.in_flight, concurrency: s.concurrency,
      eff: s.effective_rate_per_minute, base: s.base_rate_per_minute, ratio_429: s.ratio_429 ?? null,
      queue: { urgent: s.queue_urgent, high: s.queue_high, normal: s.queue_normal, low: s.queue_low },
      requests: s.requests, errors: s.errors,
    };
    byT.set(t, pt);
  }
  return [...byT.values()].sort((a, b) => a.t - b.t);
}

function fromLive(points: GatewayPoint[]): Pt[] {
  return points.map((pt) => {
    const lanes: Record<string, LanePoint> = {};
    for (const p of pt.snap.providers) {
      const l = p.lane;
      if (!l) continue;
      lanes[p.name] = {
        tokens: l.bucket.tokens, in_flight: l.in_flight, concurrency: l.concurrency,
        eff: l.bucket.effective_rate_per_minute, base: l.bucket.base_rate_per_minute,
        ratio_429: l.bucket.ratio_429_last_minute ?? null,
        queue: { urgent: l.queue_depth.urgent, high: l.queue_depth.high, normal: l.queue_depth.normal, low: l.queue_depth.low },
      };
    }
    return { t: pt.t, lanes };
  });
}

export function Gateway() {
  const live = useLive();
  const epoch = useEpoch();
  const [window_, setWindow] = useState(3600);
  const [stored, setStored] = useState<Pt[]>([]);
  const [historyError, setHistoryError] = useState<string | null>(null);
  useEffect(() => {
    let gone = false;
    const load = () =>
      get<GatewayHistory>(`/api/gateway/history?seconds=${window_}`).then(
        (h) => {
          if (gone) return;
          setStored(fromSamples(h.samples));
          setHistoryError(null);
        },
        (e: unknown) => !gone && setHistoryError(e instanceof Error ? e.message : String(e)),
      );
    void load();
    const timer = window.setInterval(load, 30000);
    return () => {
      gone = true;
      window.clearInterval(timer);
    };
  }, [window_, epoch]);
  const lastStored = stored.length ? stored[stored.length - 1].t : 0;
  const points: Pt[] = [...stored, ...fromLive(live.gateway).filter((p) => p.t > lastStored)];
  const last = live.gateway[live.gateway.length - 1]?.snap;
  if (!last) {
    return (
      <Section title="Gateway">
        <Empty>Waiting for the first gateway snapshot… (the gateway may be disabled in this daemon's config)</Empty>
      </Section>
    );
  }
  const limited = last.providers.filter((p) => p.lane);
  return (
    <div class="stack">
      <Section
        title="Gateway"
        actions={<span class="muted">{live.gatewayViaStream ? 'live stream' : 'polling'} · up {Math.round(last.uptime_seconds)} s</span>}
      >
        <div class="providers">
          {last.providers.map((p) => (
            <ProviderCard key={p.name} p={p} />
          ))}
        </div>
      </Section>
      <Admission status={last} />
      {limited.length > 0 && (
        <Section
          title="Over time"
          actions={
            <div class="filters" role="group" aria-label="Window">
              {WINDOWS.map((w) => (
                <button key={w.seconds} class={`chip${window_ === w.seconds ? ' on' : ''}`} aria-pressed={window_ === w.seconds} onClick={() => setWindow(w.seconds)}>
                  {w.label}
                </button>
              ))}
            </div>
          }
        >
          {historyError && <p class="muted small-text">Stored history unavailable ({historyError}); charts start at page load.</p>}
          <p class="muted small-text" data-role="history-span">
            {stored.length ? `stored samples since ${new Date(stored[0].t * 1000).toLocaleString()} (one per lane every 10 s, kept 24 h), then live` : 'no stored samples yet: the daemon stores one per lane every 10 s'}
          </p>
          <div class="charts">
            <Chart title="Requests per 10 s (solid) and errors (dashed)" {...requestsAndErrors(stored, limited)} />
            <Chart title="Requests available now (not LLM tokens)" {...perProvider(points, limited, (l) => l.tokens)} />
            <Chart title="In flight (solid) vs limit (dashed)" {...inFlight(points, limited)} />
            <Chart title="Rate per minute: effective (solid) vs base (dashed)" {...rates(points, limited)} />
            <Chart title="Queue depth by priority" {...queue(points)} />
            <Chart title="429 ratio (last minute)" yRange={[0, 1]} {...perProvider(points, limited, (l) => l.ratio_429)} />
          </div>
        </Section>
      )}
    </div>
  );
}

function ProviderCard({ p }: { p: ProviderStatus }) {
  const b = p.lane?.bucket;
  const ratio = b?.ratio_429_last_minute;
  // The latest retreat's 429 share: it outlasts the last minute's.
  const rt = b?.retreat_429;
  return (
    <div class="provider" data-provider={p.name}>
      <div class="item-head">
        <strong>{p.name}</strong>
        {p.api_key ? (
          <Badge kind={`br-${p.breaker.state}`} title={`${p.breaker.consecutive_failures} consecutive failures, opened ${p.breaker.times_opened}×`}>
            breaker {p.breaker.state.replace('_', '-')}
          </Badge>
        ) : (
          <Badge kind="muted" title={p.api_key_env ? `set ${p.api_key_env} to use it` : 'no api_key_env configured'}>no key</Badge>
        )}
        {b && <Badge kind={`rt-${b.retreat_state}`}>{b.retreat_state}</Badge>}
        {!p.limited && <Badge kind="muted">unlimited</Badge>}
      </div>
      <div class="muted small-text">{p.base_url}{p.fallback ? ` · fallback ${p.fallback}` : ''}</div>
      {b && p.lane && (
        <>
          <div class="meter" title={`${b.tokens.toFixed(2)} of ${b.capacity}`}>
            <span style={{ width: `${Math.min(100, (100 * b.tokens) / Math.max(1, b.capacity))}%` }} />
          </div>
          <dl class="stats compact">
            <div><dt>Requests available</dt><dd>{b.tokens.toFixed(1)} / {b.capacity}</dd></div>
            <div><dt>Rate</dt><dd>{b.effective_rate_per_minute.toFixed(1)} <small>/ {b.base_rate_per_minute} per min</small></dd></div>
            <div><dt>429 ratio (1 min)</dt><dd>{ratio === null || ratio === undefined ? 'no answers in the last minute' : `${(ratio * 100).toFixed(1)}%`}</dd></div>
            {rt && (
              <div data-role="retreat-429" title="the answers of the minute before the first cut and every answer since, until the rate was back at its base">
                <dt>429 ratio ({rt.ended_seconds_ago == null ? 'this retreat' : 'last retreat'})</dt>
                <dd>
                  {(rt.ratio_429 * 100).toFixed(1)}% <small>{rt.answers_429} of {rt.answers} answers since {countdown(rt.began_seconds_ago)} ago{rt.ended_seconds_ago == null ? '' : `, over ${countdown(rt.ended_seconds_ago)} ago`}</small>
                </dd>
              </div>
            )}
            <div><dt>In flight</dt><dd title={p.lane.concurrency_reason}>{p.lane.in_flight} / {p.lane.concurrency}</dd></div>
            <div><dt>Answer time</dt><dd>{p.lane.answer_time_seconds == null ? '—' : `${p.lane.answer_time_seconds.toFixed(1)} s`}</dd></div>
            <div><dt>Queue</dt><dd>{p.lane.queue_len} / {p.lane.queue_max}</dd></div>
            <div><dt>Granted (1 min)</dt><dd>{b.granted_last_minute}</dd></div>
          </dl>
          <div class="qdepth">
            {PRIORITIES.map((q) => (
              <PriorityPill key={q} p={q}>{q} {p.lane?.queue_depth[q] ?? 0}</PriorityPill>
            ))}
          </div>
          <div class="muted small-text" data-role="concurrency-reason">in-flight limit: {p.lane.concurrency_reason}</div>
          {p.lane.keys.length > 1 || p.lane.keys.some((k) => k.parked_for_seconds > 0) ? (
            <table class="keys" data-role="key-pool">
              <thead>
                <tr><th>Key</th><th>Rate</th><th>Granted</th><th>State</th></tr>
              </thead>
              <tbody>
                {p.lane.keys.map((k) => (
                  <tr key={k.name}>
                    <td><code>{k.name || 'key'}</code></td>
                    <td>{k.bucket.effective_rate_per_minute.toFixed(1)}/min</td>
                    <td>{k.granted}</td>
                    <td>{k.parked_for_seconds > 0 ? `parked ${countdown(k.parked_for_seconds)} — ${k.parked_reason ?? ''}` : k.bucket.retreat_state}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : null}
        </>
      )}
      <div class="muted small-text">
        requests {p.requests.total ?? 0} · ok {p.requests.ok ?? 0} · errors {p.requests.errors ?? 0} · retries {p.requests.retries ?? 0} · fallbacks {p.requests.fallbacks ?? 0}
      </div>
    </div>
  );
}

function countdown(seconds: number): string {
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

// Admission by quota: what the daemon's ticker commits to each lane and the
// tasks it holds back, with the reason.
function Admission({ status }: { status: GatewayStatus }) {
  const a = status.admission;
  if (!a) return null;
  return (
    <Section title="Admission by quota" actions={<span class="muted">{a.enabled ? 'on' : 'off (daemon.admission.enabled)'}</span>}>
      {a.lanes.length === 0 ? (
        <Empty>No limited lane has been looked at yet.</Empty>
      ) : (
        <dl class="stats compact" data-role="admission-lanes">
          {a.lanes.map((l) => (
            <div key={l.lane}>
              <dt>{l.lane}: committed / capacity</dt>
              <dd>
                {l.committed_per_minute.toFixed(1)} / {l.capacity_per_minute.toFixed(1)} <small>per min · {l.runs} runs</small>
              </dd>
            </div>
          ))}
        </dl>
      )}
      {a.held.length === 0 ? (
        <p class="muted small-text">No task is held back for quota.</p>
      ) : (
        <table data-role="held-tasks">
          <thead>
            <tr><th>Task</th><th>Agent</th><th>Why it waits</th><th>Since</th></tr>
          </thead>
          <tbody>
            {a.held.map((h) => (
              <tr key={`${h.project}/${h.task}`}>
                <td><Link href={`/projects/${h.project}/tasks/${h.task}`}>{h.project}/{h.task}</Link></td>
                <td>{h.agent}</td>
                <td>{h.reason}</td>
                <td>{countdown((Date.now() - h.since_ms) / 1000)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function inFlight(points: Pt[], providers: ProviderStatus[]): ChartData {
  const now = perProvider(points, providers, (l) => l.in_flight);
  const limit = perProvider(points, providers, (l) => l.concurrency);
  return {
    series: [
      ...now.series.map((s) => ({ ...s, label: `${s.label} in flight` })),
      ...limit.series.map((s) => ({ ...s, label: `${s.label} limit`, dash: [6, 4] })),
    ],
    data: [now.data[0], ...now.data.slice(1), ...limit.data.slice(1)] as uPlot.AlignedData,
  };
}

type ChartData = { series: SeriesSpec[]; data: uPlot.AlignedData };

function perProvider(points: Pt[], providers: ProviderStatus[], pick: (l: LanePoint) => number | null | undefined): ChartData {
  const xs = points.map((pt) => pt.t);
  const series = providers.map((p, i) => ({ label: p.name, color: color(i) }));
  const ys = providers.map((prov) =>
    points.map((pt) => {
      const l = pt.lanes[prov.name];
      const v = l ? pick(l) : null;
      return v === undefined ? null : v;
    }),
  );
  return { series, data: [xs, ...ys] as uPlot.AlignedData };
}

function requestsAndErrors(stored: Pt[], providers: ProviderStatus[]): ChartData {
  const req = perProvider(stored, providers, (l) => l.requests);
  const err = perProvider(stored, providers, (l) => l.errors);
  return {
    series: [
      ...req.series.map((s) => ({ ...s, label: `${s.label} requests` })),
      ...err.series.map((s) => ({ ...s, label: `${s.label} errors`, dash: [6, 4] })),
    ],
    data: [req.data[0], ...req.data.slice(1), ...err.data.slice(1)] as uPlot.AlignedData,
  };
}

function rates(points: Pt[], providers: ProviderStatus[]): ChartData {
  const eff = perProvider(points, providers, (l) => l.eff);
  const base = perProvider(points, providers, (l) => l.base);
  return {
    series: [
      ...eff.series.map((s) => ({ ...s, label: `${s.label} effective` })),
      ...base.series.map((s) => ({ ...s, label: `${s.label} base`, dash: [6, 4] })),
    ],
    data: [eff.data[0], ...eff.data.slice(1), ...base.data.slice(1)] as uPlot.AlignedData,
  };
}

function queue(points: Pt[]): ChartData {
  const xs = points.map((pt) => pt.t);
  const ys = PRIORITIES.map((q) => points.map((pt) => Object.values(pt.lanes).reduce((n, l) => n + (l.queue[q] ?? 0), 0)));
  return { series: PRIORITIES.map((q) => ({ label: q, color: PRIORITY_COLOR[q] })), data: [xs, ...ys] as uPlot.AlignedData };
}
