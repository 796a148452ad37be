// The gateway panel: per provider the token bucket, effective vs base rate,
// retreat state, queue depth per priority, 429 ratio and breaker state, with
// charts over time from the stream's `event: gateway` snapshots (or polling).

import type uPlot from 'uplot';
import { Chart, color, type SeriesSpec } from '../chart';
import type { Priority, ProviderStatus } from '../api';
import { useLive, type GatewayPoint } from '../live';
import { Badge, Empty, Section } from '../ui';

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
      {limited.length > 0 && (
        <Section title="Over time">
          <div class="charts">
            <Chart title="Tokens available" {...perProvider(points, limited, (p) => p.lane?.bucket.tokens)} />
            <Chart title="Rate per minute: effective (solid) vs base (dashed)" {...rates(points, limited)} />
            <Chart title="Queue depth by priority" {...queue(points)} />
            <Chart title="429 ratio (retreat window)" yRange={[0, 1]} {...perProvider(points, limited, (p) => p.lane?.bucket.ratio_429_retreat_window ?? null)} />
          </div>
        </Section>
      )}
    </div>
  );
}

function ProviderCard({ p }: { p: ProviderStatus }) {
  const b = p.lane?.bucket;
  const ratio = b?.ratio_429_retreat_window;
  return (
    <div class="provider" data-provider={p.name}>
      <div class="item-head">
        <strong>{p.name}</strong>
        <Badge kind={`br-${p.breaker.state}`} title={`${p.breaker.consecutive_failures} consecutive failures, opened ${p.breaker.times_opened}×`}>
          breaker {p.breaker.state.replace('_', '-')}
        </Badge>
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
            <div><dt>Tokens</dt><dd>{b.tokens.toFixed(1)} / {b.capacity}</dd></div>
            <div><dt>Rate</dt><dd>{b.effective_rate_per_minute.toFixed(1)} <small>/ {b.base_rate_per_minute} per min</small></dd></div>
            <div><dt>429 ratio</dt><dd>{ratio === null || ratio === undefined ? '—' : `${(ratio * 100).toFixed(1)}%`}</dd></div>
            <div><dt>In flight</dt><dd>{p.lane.in_flight} / {p.lane.concurrency}</dd></div>
            <div><dt>Queue</dt><dd>{p.lane.queue_len} / {p.lane.queue_max}</dd></div>
            <div><dt>Granted (1 min)</dt><dd>{b.granted_last_minute}</dd></div>
          </dl>
          <div class="qdepth">
            {PRIORITIES.map((q) => (
              <span key={q} class={`badge b-p-${q}`}>{q} {p.lane?.queue_depth[q] ?? 0}</span>
            ))}
          </div>
        </>
      )}
      <div class="muted small-text">
        requests {p.requests.total ?? 0} · ok {p.requests.ok ?? 0} · errors {p.requests.errors ?? 0} · retries {p.requests.retries ?? 0} · fallbacks {p.requests.fallbacks ?? 0}
      </div>
    </div>
  );
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
