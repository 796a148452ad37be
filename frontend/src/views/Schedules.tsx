// A project's schedules: each with its rule, next firing and last instance,
// pause/resume/run-now buttons, and the history of its recorded slots
// (fired with the task's state now, or skipped and why).

import { useState } from 'preact/hooks';
import { enc, get, post, type Schedule, type ScheduleDetail } from '../api';
import { useEventRev } from '../live';
import { Badge, Empty, ErrorBox, Link, Section, Time, useClock, useFetch, useThrottled } from '../ui';

function rule(s: Schedule): string {
  if (s.cron) return `cron ${s.cron} (${s.timezone})`;
  if (s.every_ms) return `every ${s.every_ms % 1000 === 0 ? `${s.every_ms / 1000}s` : `${s.every_ms}ms`}`;
  return '—';
}

/** When, in the future: "in 5s", "in 3m", … */
function until(t: string | null | undefined): string {
  if (!t) return '—';
  const s = Math.max(0, Math.round((Date.parse(t) - Date.now()) / 1000));
  if (s < 60) return `in ${s}s`;
  if (s < 3600) return `in ${Math.floor(s / 60)}m`;
  if (s < 86400) return `in ${Math.floor(s / 3600)}h`;
  return `in ${Math.floor(s / 86400)}d`;
}

export function Schedules({ project }: { project: string }) {
  useClock(1000);
  const rev = useThrottled(
    useEventRev((ev) => ev.project === project && (ev.kind.startsWith('schedule.') || ev.kind.startsWith('task.'))),
    1000,
  );
  const list = useFetch(`sch${project}:${rev}`, () => get<Schedule[]>(`/api/projects/${enc(project)}/schedules`));
  return (
    <div class="stack">
      <Section title="Schedules">
        <ErrorBox error={list.error} what="schedules" />
        {list.data && list.data.length === 0 && (
          <Empty>
            No schedules yet. Add one with <code>moziplus schedule add --project {project}</code> or under{' '}
            <code>schedules:</code> in project.yaml.
          </Empty>
        )}
        <ul class="items">
          {list.data?.map((s) => (
            <ScheduleItem key={s.id} project={project} s={s} rev={rev} onChange={list.reload} />
          ))}
        </ul>
      </Section>
    </div>
  );
}

function ScheduleItem(props: { project: string; s: Schedule; rev: string; onChange: () => void }) {
  const { project, s } = props;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const base = `/api/projects/${enc(project)}/schedules/${enc(s.id)}`;
  const detail = useFetch(`schd${project}:${s.id}:${props.rev}`, () => get<ScheduleDetail>(`${base}?limit=20`));
  const act = (verb: 'pause' | 'resume' | 'run') => {
    setBusy(true);
    setError(null);
    post(`${base}/${verb}`).then(
      () => {
        setBusy(false);
        props.onChange();
        detail.reload();
      },
      (e: unknown) => {
        setBusy(false);
        setError(e instanceof Error ? e.message : String(e));
      },
    );
  };
  return (
    <li data-schedule={s.id}>
      <div class="item-head">
        <strong>{s.id}</strong>
        <Badge kind={s.enabled ? 'ok' : 'muted'}>{s.enabled ? 'active' : 'paused'}</Badge>
        <span class="muted">{rule(s)}</span>
        <span class="tag">overlap {s.overlap}</span>
        <span class="tag">missed {s.missed}</span>
        {s.source === 'config' && <Badge kind="muted">project.yaml</Badge>}
      </div>
      <p>
        {s.title} · next firing:{' '}
        <span data-testid="next-firing" title={s.next_at ?? ''}>
          {s.enabled ? until(s.next_at) : 'paused'}
        </span>
        {' · '}last instance:{' '}
        {s.last_task_id ? (
          <>
            <Link href={`/projects/${project}/tasks/${s.last_task_id}`}>{s.last_task_id}</Link>{' '}
            {s.last_task_status && <Badge kind={s.last_task_status}>{s.last_task_status}</Badge>}
          </>
        ) : (
          'none yet'
        )}
      </p>
      <div class="actions">
        {s.enabled ? (
          <button type="button" data-action="pause" disabled={busy} onClick={() => act('pause')}>
            Pause
          </button>
        ) : (
          <button type="button" data-action="resume" disabled={busy} onClick={() => act('resume')}>
            Resume
          </button>
        )}
        <button type="button" data-action="run" disabled={busy} onClick={() => act('run')}>
          Run now
        </button>
      </div>
      <ErrorBox error={error} />
      <ErrorBox error={detail.error} what="history" />
      {detail.data && detail.data.firings.length > 0 && (
        <table class="history" data-testid="history">
          <thead>
            <tr>
              <th>slot</th>
              <th>outcome</th>
              <th>task</th>
              <th>state</th>
            </tr>
          </thead>
          <tbody>
            {detail.data.firings.map((f) => (
              <tr key={f.scheduled_at} data-reason={f.reason}>
                <td>
                  <Time t={f.scheduled_at} />
                </td>
                <td>
                  <Badge kind={f.fired ? 'ok' : 'muted'}>{f.fired ? 'fired' : 'skipped'}</Badge> {f.reason.replace('_', ' ')}
                  {f.slots > 1 ? ` (${f.slots} slots)` : ''}
                </td>
                <td>{f.task_id ? <Link href={`/projects/${project}/tasks/${f.task_id}`}>{f.task_id}</Link> : '—'}</td>
                <td>{f.task_status ? <Badge kind={f.task_status}>{f.task_status}</Badge> : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {detail.data && detail.data.firings.length === 0 && <Empty>Not fired yet.</Empty>}
    </li>
  );
}
