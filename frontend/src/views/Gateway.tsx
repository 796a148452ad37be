// The gateway panel: per provider the requests available, effective vs base
// rate, retreat state, the in-flight limit and why, the key pool, queue depth
// per priority, 429 ratio and breaker state; the daemon's admission by quota
// (committed demand against capacity, tasks held back and why); with charts
// over time from the stream's `event: gateway` snapshots (or polling).

import type uPlot from 'uplot';
import { Chart, color, type SeriesSpec } from '../chart';
import type { GatewayStatus, Priority, ProviderStatus } from '../api';
import { useLive, type GatewayPoint } from '../live';
import { Badge, Empty, Link, Section } from '../ui';

const PRIORITIES: Priority[] = ['urgent', 'high', 'normal', 'low'];

export function Gateway() {
  const live = useLive();
  const points = live.gateway;
  const last = points[points.length - 1]?.snap;
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
        <Section title="Over time">
          <div class="charts">
            <Chart title="Requests available now (not LLM tokens)" {...perProvider(points, limited, (p) => p.lane?.bucket.tokens)} />
            <Chart title="In flight (solid) vs limit (dashed)" {...inFlight(points, limited)} />
            <Chart title="Rate per minute: effective (solid) vs base (dashed)" {...rates(points, limited)} />
            <Chart title="Queue depth by priority" {...queue(points)} />
            <Chart title="429 ratio (last minute)" yRange={[0, 1]} {...perProvider(points, limited, (p) => p.lane?.bucket.ratio_429_last_minute ?? null)} />
          </div>
        </Section>
      )}
    </div>
  );
}

function ProviderCard({ p }: { p: ProviderStatus }) {
  const b = p.lane?.bucket;
  const ratio = b?.ratio_429_last_minute;
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
            <div><dt>429 ratio (1 min)</dt><dd>{ratio === null || ratio === undefined ? 'no answers yet' : `${(ratio * 100).toFixed(1)}%`}</dd></div>
            <div><dt>In flight</dt><dd title={p.lane.concurrency_reason}>{p.lane.in_flight} / {p.lane.concurrency}</dd></div>
            <div><dt>Answer time</dt><dd>{p.lane.answer_time_seconds == null ? '—' : `${p.lane.answer_time_seconds.toFixed(1)} s`}</dd></div>
            <div><dt>Queue</dt><dd>{p.lane.queue_len} / {p.lane.queue_max}</dd></div>
            <div><dt>Granted (1 min)</dt><dd>{b.granted_last_minute}</dd></div>
          </dl>
          <div class="qdepth">
            {PRIORITIES.map((q) => (
              <span key={q} class={`badge b-p-${q}`}>{q} {p.lane?.queue_depth[q] ?? 0}</span>
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

function inFlight(points: GatewayPoint[], providers: ProviderStatus[]): ChartData {
  const now = perProvider(points, providers, (p) => p.lane?.in_flight);
  const limit = perProvider(points, providers, (p) => p.lane?.concurrency);
  return {
    series: [
      ...now.series.map((s) => ({ ...s, label: `${s.label} in flight` })),
      ...limit.series.map((s) => ({ ...s, label: `${s.label} limit`, dash: [6, 4] })),
    ],
    data: [now.data[0], ...now.data.slice(1), ...limit.data.slice(1)] as uPlot.AlignedData,
  };
}

type ChartData = { series: SeriesSpec[]; data: uPlot.AlignedData };

function perProvider(points: GatewayPoint[], providers: ProviderStatus[], pick: (p: ProviderStatus) => number | null | undefined): ChartData {
  const xs = points.map((pt) => pt.t);
  const series = providers.map((p, i) => ({ label: p.name, color: color(i) }));
  const ys = providers.map((prov) =>
    points.map((pt) => {
      const p = pt.snap.providers.find((x) => x.name === prov.name);
      const v = p ? pick(p) : null;
      return v === undefined ? null : v;
    }),
  );
  return { series, data: [xs, ...ys] as uPlot.AlignedData };
}

function rates(points: GatewayPoint[], providers: ProviderStatus[]): ChartData {
  const eff = perProvider(points, providers, (p) => p.lane?.bucket.effective_rate_per_minute);
  const base = perProvider(points, providers, (p) => p.lane?.bucket.base_rate_per_minute);
  return {
    series: [
      ...eff.series.map((s) => ({ ...s, label: `${s.label} effective` })),
      ...base.series.map((s) => ({ ...s, label: `${s.label} base`, dash: [6, 4] })),
    ],
    data: [eff.data[0], ...eff.data.slice(1), ...base.data.slice(1)] as uPlot.AlignedData,
  };
}

function queue(points: GatewayPoint[]): ChartData {
  const xs = points.map((pt) => pt.t);
  const ys = PRIORITIES.map((q) => points.map((pt) => pt.snap.providers.reduce((n, p) => n + (p.lane?.queue_depth[q] ?? 0), 0)));
  return { series: PRIORITIES.map((q, i) => ({ label: q, color: color(i) })), data: [xs, ...ys] as uPlot.AlignedData };
}
