// Decisions awaiting approval across all projects, with approve and reject.

import { useState } from 'preact/hooks';
import { enc, get, post, type Decision } from '../api';
import { useEventRev } from '../live';
import { Empty, ErrorBox, Link, Section, Time, useClock, useFetch, useThrottled } from '../ui';

export function Decisions({ project }: { project?: string }) {
  const rev = useThrottled(
    useEventRev((ev) => ev.kind.startsWith('decision.') && (!project || ev.project === project)),
    300,
  );
  useClock(5000);
  const list = useFetch(`${project ?? '*'}:${rev}`, async () => {
    if (project) {
      const r = await get<{ decisions: Decision[] }>(`/api/projects/${enc(project)}/decisions?status=proposed`);
      return r.decisions.map((d) => ({ ...d, project }));
    }
    return (await get<{ decisions: Decision[] }>('/api/decisions?status=proposed')).decisions;
  });
  // Decided here: kept on screen (with their new status) after the refetch
  // drops them from the proposed list, until the page is left.
  const [settled, setSettled] = useState<Decision[]>([]);
  const key = (d: Decision) => `${d.project}:${d.id}`;
  const open = list.data ?? [];
  const shown = [...open.filter((d) => !settled.some((x) => key(x) === key(d))), ...settled];
  return (
    <Section title={`Awaiting approval${list.data ? ` (${open.filter((d) => !settled.some((x) => key(x) === key(d))).length})` : ''}`}>
      <ErrorBox error={list.error} what="decisions" />
      {list.data && shown.length === 0 && <Empty>Nothing waits for a decision.</Empty>}
      <ul class="decisions" data-testid="decisions">
        {shown.map((d) => (
          <DecisionCard
            key={key(d)}
            d={d}
            onDone={(after) => {
              setSettled((xs) => [...xs.filter((x) => key(x) !== key(d)), { ...d, ...after, project: d.project }]);
              list.reload();
            }}
          />
        ))}
      </ul>
    </Section>
  );
}

function DecisionCard({ d, onDone }: { d: Decision; onDone: (after: Decision) => void }) {
  const [rationale, setRationale] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const done = d.status !== 'proposed' ? d.status : null;
  const decide = async (verdict: 'approve' | 'reject') => {
    setBusy(true);
    setError(null);
    try {
      const r = await post<Decision>(`/api/projects/${enc(d.project ?? '')}/decisions/${d.id}/${verdict}`, rationale.trim() ? { rationale } : {});
      onDone(r);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li class="decision" data-decision={`${d.project}:${d.id}`}>
      <div class="item-head">
        <strong>D{d.id}</strong>
        <Link href={`/projects/${d.project}`}>{d.project}</Link>
        {d.task_id && <Link href={`/projects/${d.project}/tasks/${d.task_id}`}>{d.task_id}</Link>}
        <span class="muted">by {d.author}</span>
        <Time t={d.created_at} />
        {d.expires_at && <span class="muted">expires {new Date(d.expires_at).toLocaleTimeString()}</span>}
      </div>
      <p class="question">{d.question}</p>
      {d.decision && <p class="pre proposal">{d.decision}</p>}
      {d.rationale && <p class="muted">{d.rationale}</p>}
      {done ? (
        <p class={done === 'approved' ? 'ok' : 'attn'}>
          {done}
          {d.decided_by ? ` by ${d.decided_by}` : ''}
        </p>
      ) : (
        <div class="row">
          <input
            placeholder="Rationale (optional)"
            value={rationale}
            onInput={(e) => setRationale((e.target as HTMLInputElement).value)}
            aria-label="Rationale"
          />
          <button class="primary" disabled={busy} onClick={() => decide('approve')} data-action="approve">
            Approve
          </button>
          <button class="danger" disabled={busy} onClick={() => decide('reject')} data-action="reject">
            Reject
          </button>
        </div>
      )}
      <ErrorBox error={error} />
    </li>
  );
}
