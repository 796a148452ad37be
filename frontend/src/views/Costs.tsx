// Costs: LLM spend from the stored ledger (`GET /api/usage`, the same sum
// `moziplus usage` prints) per project, agent, model and day, in tokens and
// USD; the budgets in force as bars with their use (`GET /api/budgets`), and
// a form that sets or clears one (`PUT`/`DELETE /api/budgets`; the API token
// of the Config page when the daemon has one).

import { useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { enc, put, request } from '../api';
import type { components } from '../api.gen';
import { Chart, color } from '../chart';
import { useLive } from '../live';
import { Empty, ErrorBox, Section, useFetch } from '../ui';

type UsageReport = components['schemas']['UsageReport'];
type UsageRow = components['schemas']['UsageRow'];
type BudgetList = components['schemas']['BudgetList'];
type BudgetLine = components['schemas']['BudgetLine'];
type BudgetChanged = components['schemas']['BudgetChanged'];

const tokens = (r: UsageRow) => r.prompt_tokens + r.completion_tokens;
const usd = (v: number) => `$${v.toFixed(4)}`;

export function Costs() {
  const live = useLive();
  const [days, setDays] = useState(30);
  const [rev, setRev] = useState(0);
  const usage = useFetch(`usage:${days}:${live.epoch}:${rev}`, () => request<UsageReport>('GET', `/api/usage?days=${days}`));
  const budgets = useFetch(`budgets:${live.epoch}:${rev}`, () => request<BudgetList>('GET', '/api/budgets'));
  const r = usage.data;
  return (
    <div class="stack" data-testid="costs">
      <Section
        title="Spend (stored ledger)"
        actions={
          <label>
            last{' '}
            <select value={String(days)} onChange={(e) => setDays(Number((e.target as HTMLSelectElement).value))}>
              {[1, 7, 30, 90, 400].map((d) => (
                <option value={String(d)}>{d}</option>
              ))}
            </select>{' '}
            days <button class="small" onClick={() => setRev((n) => n + 1)}>Refresh</button>
          </label>
        }
      >
        <ErrorBox error={usage.error} what="usage" />
        {r && r.total.responses === 0 ? (
          <Empty>No LLM usage in this period. Calls through the gateway are booked here.</Empty>
        ) : r ? (
          <>
            <p data-testid="costs-total">
              {r.total.responses} responses · {tokens(r.total).toLocaleString()} tokens ({r.total.prompt_tokens.toLocaleString()} in,{' '}
              {r.total.completion_tokens.toLocaleString()} out, {r.total.cached_tokens.toLocaleString()} cached) · {usd(r.total.cost_usd)}
              {r.total.unpriced > 0 && <span class="muted"> · {r.total.unpriced} unpriced</span>}
            </p>
            <div class="charts">
              <Chart title="Tokens per day (UTC)" {...perDay(r.by_day, tokens, 'tokens')} />
              <Chart title="USD per day (UTC)" {...perDay(r.by_day, (d) => d.cost_usd, 'USD')} />
            </div>
            <div class="bars-grid">
              <Bars title="Per project" rows={r.by_project} kind="project" />
              <Bars title="Per agent" rows={r.by_agent} kind="agent" />
              <Bars title="Per model" rows={r.by_model} kind="model" />
            </div>
          </>
        ) : null}
      </Section>
      <Section title="Budgets">
        <ErrorBox error={budgets.error} what="budgets" />
        {budgets.data && (
          <>
            <p class="muted">
              Windows begin at {String(budgets.data.reset_hour).padStart(2, '0')}:00 {budgets.data.time_zone}; each budget is reported once
              per window at {Math.round(budgets.data.soft_threshold * 100)}%.
            </p>
            {budgets.data.budgets.length === 0 ? (
              <Empty>No budget is set. Set one below, with `moziplus budget set`, or under `budgets:` in config/default.yaml.</Empty>
            ) : (
              <ul class="items budgets">
                {budgets.data.budgets.map((b) => (
                  <BudgetBar key={b.budget} b={b} />
                ))}
              </ul>
            )}
          </>
        )}
        <BudgetForm lines={budgets.data?.budgets ?? []} changed={() => setRev((n) => n + 1)} />
      </Section>
    </div>
  );
}

/** A time chart of the days' figures (`YYYY-MM-DD` keys, UTC). */
function perDay(days: UsageRow[], pick: (d: UsageRow) => number, label: string) {
  const xs = days.map((d) => Date.parse(`${d.key}T00:00:00Z`) / 1000);
  const data: uPlot.AlignedData = [xs, days.map(pick)];
  return { series: [{ label, color: color(label === 'USD' ? 2 : 0) }], data };
}

/** Horizontal bars of tokens and USD, one row per key. */
function Bars(props: { title: string; rows: UsageRow[]; kind: string }) {
  const maxT = Math.max(1, ...props.rows.map(tokens));
  const maxU = Math.max(1e-9, ...props.rows.map((r) => r.cost_usd));
  return (
    <figure class="bars" data-bars={props.kind}>
      <figcaption>{props.title}: tokens · USD</figcaption>
      {props.rows.length === 0 ? (
        <Empty>None.</Empty>
      ) : (
        <table>
          <tbody>
            {props.rows.map((r, i) => (
              <tr key={r.key} data-key={r.key}>
                <th title={r.key}>{r.key}</th>
                <td>
                  <span class="bar" style={{ width: `${(100 * tokens(r)) / maxT}%`, background: color(i) }} />
                  <small>{tokens(r).toLocaleString()}</small>
                </td>
                <td>
                  <span class="bar" style={{ width: `${(100 * r.cost_usd) / maxU}%`, background: color(i) }} />
                  <small>{usd(r.cost_usd)}</small>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </figure>
  );
}

function Meter(props: { used: number | null | undefined; limit: number | null | undefined; show: (v: number) => string; unit: string }) {
  if (props.limit === null || props.limit === undefined) return null;
  const used = props.used ?? 0;
  const share = props.limit > 0 ? Math.min(1, used / props.limit) : used > 0 ? 1 : 0;
  const level = share >= 1 ? 'over' : share >= 0.8 ? 'near' : 'ok';
  return (
    <div class={`budget-meter ${level}`} data-unit={props.unit} title={`${props.show(used)} of ${props.show(props.limit)}`}>
      <span style={{ width: `${share * 100}%` }} />
      <small>
        {props.used === null || props.used === undefined ? '—' : props.show(used)} / {props.show(props.limit)} {props.unit}
      </small>
    </div>
  );
}

function BudgetBar({ b }: { b: BudgetLine }) {
  const none = b.limit_tokens == null && b.limit_usd == null;
  return (
    <li data-budget={b.budget}>
      <div class="item-head">
        <strong>{b.budget}</strong>
        <span class="muted">{b.name}</span>
        <span class="tag">{b.source}</span>
      </div>
      {none ? (
        <p class="muted">no cap</p>
      ) : (
        <>
          <Meter used={b.used_tokens} limit={b.limit_tokens} show={(v) => Math.round(v).toLocaleString()} unit="tokens" />
          <Meter used={b.used_usd} limit={b.limit_usd} show={(v) => usd(v)} unit="USD" />
        </>
      )}
    </li>
  );
}

function BudgetForm(props: { lines: BudgetLine[]; changed: () => void }) {
  const [budget, setBudget] = useState('');
  const [tok, setTok] = useState('');
  const [dollars, setDollars] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const finish = (c: BudgetChanged) => {
    setDone(`${c.budget.budget}: ${c.budget.source}${c.unblocked.length ? `; unblocked ${c.unblocked.join(', ')}` : ''}`);
    props.changed();
  };
  const run = async (f: () => Promise<BudgetChanged>) => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      finish(await f());
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  const set = (e: Event) => {
    e.preventDefault();
    const body: { budget: string; tokens?: number; usd?: number } = { budget: budget.trim() };
    if (tok.trim()) body.tokens = Number(tok);
    if (dollars.trim()) body.usd = Number(dollars);
    void run(() => put<BudgetChanged>('/api/budgets', body));
  };
  const clear = () => void run(() => request<BudgetChanged>('DELETE', `/api/budgets?budget=${enc(budget.trim())}`));
  return (
    <form class="budget-form" onSubmit={set} data-testid="budget-form">
      <input
        list="budget-keys"
        name="budget"
        placeholder="project:alpha:day"
        value={budget}
        onInput={(e) => setBudget((e.target as HTMLInputElement).value)}
        required
      />
      <datalist id="budget-keys">
        {props.lines.map((l) => (
          <option value={l.budget} />
        ))}
      </datalist>
      <input name="tokens" type="number" min="0" step="1" placeholder="tokens" value={tok} onInput={(e) => setTok((e.target as HTMLInputElement).value)} />
      <input name="usd" type="number" min="0" step="any" placeholder="USD" value={dollars} onInput={(e) => setDollars((e.target as HTMLInputElement).value)} />
      <button type="submit" disabled={busy} data-action="set-budget">
        Set
      </button>
      <button type="button" disabled={busy || !budget.trim()} onClick={clear} data-action="clear-budget">
        Back to config
      </button>
      <small class="muted">Neither tokens nor USD: no cap. Needs the API token (Config page) when the daemon has one.</small>
      <ErrorBox error={error} />
      {done && <p data-testid="budget-done">{done}</p>}
    </form>
  );
}
