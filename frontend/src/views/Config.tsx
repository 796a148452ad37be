// The gateway's runtime settings (`/api/gateway/config`), changed with the
// admin token. The token lives in sessionStorage only (gone with the tab) and
// is also sent on the API's mutating calls when the daemon has an API token.

import { useState } from 'preact/hooks';
import { ApiFailure, get, post, put, token, type GatewaySettings } from '../api';
import { ErrorBox, Section, useFetch } from '../ui';

const FIELDS: { key: keyof GatewaySettings; label: string; step: string; int?: boolean; auto?: boolean; help: string }[] = [
  { key: 'rate_per_minute', label: 'Base rate per minute', step: '0.1', help: 'Token bucket refill of every limited provider.' },
  { key: 'capacity', label: 'Bucket capacity', step: '0.1', help: 'Burst size.' },
  { key: 'queue_max_size', label: 'Queue size', step: '1', int: true, help: 'Waiting requests per limited provider; cannot shrink below the current depth.' },
  { key: 'concurrency', label: 'Concurrency', step: '1', int: true, auto: true, help: 'Requests in flight upstream per limited provider: "auto" (rate x answer time) or a number.' },
  { key: 'request_timeout', label: 'Wait allowance (s)', step: '0.1', help: 'How long urgent/high/normal requests may wait for a token.' },
  { key: 'low_priority_timeout', label: 'Low-priority wait (s)', step: '0.1', help: 'Wait of low requests before they are degraded.' },
];

export function Config() {
  const [tok, setTok] = useState(token.get());
  const [saved, setSaved] = useState(0);
  const cfg = useFetch(`cfg${saved}`, () => get<GatewaySettings>('/api/gateway/config'));
  const [edits, setEdits] = useState<Partial<Record<keyof GatewaySettings, string>>>({});
  const [error, setError] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);

  const saveToken = (e: Event) => {
    e.preventDefault();
    token.set(tok.trim());
    setSaved((n) => n + 1);
    setMessage(tok.trim() ? 'Token kept for this browser tab.' : 'Token forgotten.');
  };

  const apply = async (e: Event) => {
    e.preventDefault();
    const body: Record<string, unknown> = {};
    for (const f of FIELDS) {
      const v = edits[f.key];
      if (v === undefined || v === '') continue;
      if (f.auto && v.trim() === 'auto') {
        body[f.key] = 'auto';
        continue;
      }
      const n = Number(v);
      if (!Number.isFinite(n)) {
        setError(`${f.label}: not a number${f.auto ? ' (nor "auto")' : ''}`);
        return;
      }
      body[f.key] = f.int ? Math.round(n) : n;
    }
    if (edits.full_policy) body.full_policy = edits.full_policy;
    if (Object.keys(body).length === 0) {
      setMessage('Nothing changed.');
      return;
    }
    setError(null);
    try {
      try {
        await post('/api/gateway/config', body);
      } catch (err) {
        if (err instanceof ApiFailure && err.status === 405) await put('/api/gateway/config', body);
        else throw err;
      }
      setEdits({});
      setMessage('Applied.');
      setSaved((n) => n + 1);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  const needsToken = cfg.error !== null && /token|auth/i.test(cfg.error);
  return (
    <div class="stack">
      <Section title="Admin token">
        <form class="row" onSubmit={saveToken}>
          <input
            type="password"
            autocomplete="off"
            placeholder="Bearer token (gateway.admin_token or server.api_token)"
            value={tok}
            onInput={(e) => setTok((e.target as HTMLInputElement).value)}
            aria-label="Admin token"
          />
          <button class="primary">Use token</button>
        </form>
        <p class="muted small-text">Kept in this tab's sessionStorage only; sent as <code>Authorization: Bearer</code>.</p>
      </Section>
      <Section title="Gateway settings">
        {needsToken ? <p class="error">{cfg.error} — enter the admin token above.</p> : <ErrorBox error={cfg.error} what="config" />}
        {message && <p class="ok">{message}</p>}
        <ErrorBox error={error} />
        {cfg.data && (
          <form class="settings" onSubmit={apply}>
            {FIELDS.map((f) => (
              <label key={f.key}>
                <span>{f.label}</span>
                <input
                  type={f.auto ? 'text' : 'number'}
                  inputMode={f.auto ? 'numeric' : undefined}
                  step={f.auto ? undefined : f.step}
                  min="0"
                  name={f.key}
                  placeholder={String(cfg.data?.[f.key])}
                  value={edits[f.key] ?? ''}
                  onInput={(e) => setEdits({ ...edits, [f.key]: (e.target as HTMLInputElement).value })}
                />
                <small class="muted">now {String(cfg.data?.[f.key])} · {f.help}</small>
              </label>
            ))}
            <label>
              <span>When the queue is full</span>
              <select
                name="full_policy"
                value={edits.full_policy ?? cfg.data.full_policy}
                onChange={(e) => setEdits({ ...edits, full_policy: (e.target as HTMLSelectElement).value })}
              >
                <option value="reject">reject the newcomer</option>
                <option value="drop_lowest">drop the lowest priority</option>
                <option value="passthrough">pass through (token still needed)</option>
              </select>
              <small class="muted">now {cfg.data.full_policy}</small>
            </label>
            <div class="row">
              <button class="primary">Apply</button>
              <button type="button" onClick={() => setEdits({})}>
                Reset
              </button>
            </div>
          </form>
        )}
      </Section>
    </div>
  );
}
