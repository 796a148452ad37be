// Overview: daemon and ticker state with its controls, active sessions, and a
// summary card per project.

import { useEffect, useState } from 'preact/hooks';
import { STATUSES, ago, fmtBytes, get, post, type BbEvent, type DaemonStatus, type Project, type ActiveRun } from '../api';
import { ACTIVITY, useEventRev } from '../live';
import { Badge, Empty, ErrorBox, Link, Section, useClock, useFetch, useThrottled } from '../ui';

export function Overview() {
  // Task counts, runs and open decisions change with these kinds; liveness
  // beats change none of them.
  const rev = useThrottled(useEventRev(changesOverview), 1000);
  // The status (last tick, degraded) is read again every 5 s too: ticks
  // write no event, and "last tick 31s ago" at a 1 s interval misled.
  const clock = useClock(5000);
  const status = useFetch(`s${rev}-${clock}`, () => get<DaemonStatus>('/api/daemon/status'));
  const sessions = useFetch(`x${rev}`, () => get<{ active: ActiveRun[] }>('/api/daemon/sessions'));
  const projects = useFetch(`p${rev}`, () =>
    get<{ projects: Project[] }>('/api/projects').then((r) => r.projects).catch(() => null),
  );
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);

  const act = async (what: 'stop' | 'start' | 'tick') => {
    setBusy(what);
    setActionError(null);
    try {
      await post(`/api/daemon/${what}`);
      status.reload();
      sessions.reload();
    } catch (e) {
      setActionError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };

  const s = status.data;
  // The first data on screen (bench/dashboard.sh reads this mark).
  useEffect(() => {
    if (s && performance.getEntriesByName('mozi:first-data').length === 0) performance.mark('mozi:first-data');
  }, [s]);
  const projectList = mergeProjects(s, projects.data ?? null);
  return (
    <div class="stack">
      <Section
        title="Daemon"
        actions={
          s && (
            <>
              {s.ticker_running ? (
                <button onClick={() => act('stop')} disabled={busy !== null} data-testid="pause">
                  Pause
                </button>
              ) : (
                <button class="primary" onClick={() => act('start')} disabled={busy !== null} data-testid="resume">
                  Resume
                </button>
              )}
              <button onClick={() => act('tick')} disabled={busy !== null} data-testid="tick">
                Tick now
              </button>
            </>
          )
        }
      >
        <ErrorBox error={status.error} what="status" />
        <ErrorBox error={actionError} />
        {s && (s.degraded ?? []).length > 0 && (
          <div class="error" role="alert" data-testid="degraded">
            <strong>Degraded: runs cannot start or calls cannot pass</strong>
            <ul>
              {(s.degraded ?? []).map((p) =>
                p.project ? (
                  <li key={`${p.project}/${p.agent}`}>
                    project <Link href={`/projects/${encodeURIComponent(p.project)}`}>{p.project}</Link>, agent{' '}
                    <code>{p.agent}</code> ({p.runtime}): {p.reason} — {p.failures} failure(s), next try{' '}
                    {ago(new Date(p.retry_at_ms).toISOString())}
                  </li>
                ) : (
                  <li key={p.runtime} data-testid="provider-problem">
                    <Link href="/gateway">{p.runtime}</Link>: {p.reason} — since {ago(new Date(p.since_ms).toISOString())}
                  </li>
                ),
              )}
            </ul>
          </div>
        )}
        {s && (s.unusable_review_protocols ?? []).length > 0 && (
          <div class="error" role="status" data-testid="unusable-protocols">
            <strong>Review protocols the team cannot staff</strong> (their tasks wait in review)
            <ul>
              {(s.unusable_review_protocols ?? []).map((p) => (
                <li key={p.protocol}>
                  <code>{p.protocol}</code>: {p.reason}
                </li>
              ))}
            </ul>
          </div>
        )}
        {s && (
          <dl class="stats" data-testid="daemon-stats">
            <div>
              <dt>Ticker</dt>
              <dd>
                <Badge kind={s.ticker_running ? 'ok' : 'warn'}>{s.ticker_running ? 'running' : 'paused'}</Badge>
              </dd>
            </div>
            <div>
              <dt>Last tick</dt>
              <dd title={s.last_tick ?? ''}>
                {ago(s.last_tick)}
                {s.last_tick_ms !== null && s.last_tick_ms !== undefined && <small> · {Number(s.last_tick_ms).toFixed(1)} ms</small>}
              </dd>
            </div>
            <div>
              <dt>Interval</dt>
              <dd>{s.tick_interval_seconds} s</dd>
            </div>
            <div>
              <dt>Active sessions</dt>
              <dd>
                {s.active_sessions}
                {s.limits && <small> / {s.limits.max_global_agents}</small>}
              </dd>
            </div>
            <div>
              <dt>Runs started</dt>
              <dd>{s.runs_started ?? '—'}</dd>
            </div>
            <div>
              <dt>Inbox pending</dt>
              <dd>{fmtBytes(s.inbox_pending)}</dd>
            </div>
          </dl>
        )}
      </Section>

      {s?.cluster && <Cluster c={s.cluster} />}

      <Section title="Active sessions">
        <ErrorBox error={sessions.error} what="sessions" />
        {sessions.data && sessions.data.active.length === 0 && <Empty>No agent is running.</Empty>}
        {sessions.data && sessions.data.active.length > 0 && (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Project</th>
                  <th>Task</th>
                  <th>Agent</th>
                  <th>Kind</th>
                  <th>Doing</th>
                  <th>Started</th>
                  <th>Deadline</th>
                </tr>
              </thead>
              <tbody>
                {sessions.data.active.map((r) => (
                  <tr key={r.session_id} data-session={r.session_id}>
                    <td>{r.project}</td>
                    <td class="session-task">
                      <Link href={`/projects/${r.project}/tasks/${r.task_id}`}>{r.task_id}</Link>{' '}
                      <span data-task-title>{r.task_title}</span>
                    </td>
                    <td>{r.agent}</td>
                    <td>{r.kind}</td>
                    <td class={`session-state st-${r.state}`} data-state={r.state}>
                      {r.state_text}
                      {r.activity && <div class="muted small">{r.activity}</div>}
                    </td>
                    <td>{ago(r.started_at_ms)}</td>
                    <td>{inSeconds(r.deadline_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>

      <Section title="Projects">
        {projectList.length === 0 && s && <Empty>No projects yet. Create one with <code>moziplus project create</code>.</Empty>}
        <div class="projects">
          {projectList.map((p) => (
            <ProjectCard key={p.id} p={p} />
          ))}
        </div>
      </Section>
    </div>
  );
}

// The daemons sharing this daemon's PostgreSQL store (README, "Many hosts").
function Cluster({ c }: { c: NonNullable<DaemonStatus['cluster']> }) {
  const alive = c.daemons.filter((d) => d.alive).length;
  return (
    <Section title={`Cluster · ${alive} daemon${alive === 1 ? '' : 's'} alive`}>
      <div class="table-wrap">
        <table data-testid="cluster">
          <thead>
            <tr>
              <th>Host</th>
              <th>Daemon</th>
              <th>Agents</th>
              <th>Runs</th>
              <th>Role</th>
              <th>Last seen</th>
            </tr>
          </thead>
          <tbody>
            {c.daemons.map((d) => (
              <tr key={d.id} data-daemon={d.id} class={d.alive ? '' : 'muted'}>
                <td>{d.host}</td>
                <td>
                  <code>{d.id}</code>
                  {d.id === c.this_daemon && <small> (this one)</small>}
                </td>
                <td>{d.agents.length > 0 ? d.agents.join(', ') : '—'}</td>
                <td>{d.runs}</td>
                <td data-role>
                  {d.leader ? <Badge kind="ok">leader</Badge> : d.alive ? 'member' : <Badge kind="warn">gone</Badge>}
                </td>
                <td title={d.last_seen}>{ago(d.last_seen)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}

function changesOverview(ev: BbEvent): boolean {
  if (ACTIVITY.has(ev.kind)) return false;
  // `provider.degraded` / `provider.recovered` change the status's
  // `degraded` list: the banner must follow without a reload.
  return (
    ev.kind.startsWith('task.') ||
    ev.kind.startsWith('session.') ||
    ev.kind.startsWith('decision.') ||
    ev.kind.startsWith('provider.')
  );
}

interface ProjectLine {
  id: string;
  name: string;
  summary: Record<string, number>;
  activeAgents: number;
  dbSize?: number;
  decisions?: number;
  error?: string;
  archived: boolean;
}

function mergeProjects(s: DaemonStatus | undefined, list: Project[] | null): ProjectLine[] {
  const byId = new Map<string, ProjectLine>();
  for (const [id, p] of Object.entries(s?.projects ?? {})) {
    byId.set(id, {
      id,
      name: id,
      summary: p.tasks_summary ?? {},
      activeAgents: p.active_agents,
      dbSize: p.db_size_bytes,
      error: p.error,
      archived: false,
    });
  }
  for (const p of list ?? []) {
    const line = byId.get(p.id);
    byId.set(p.id, {
      id: p.id,
      name: p.name || p.id,
      summary: line?.summary ?? p.tasks_summary ?? {},
      activeAgents: line?.activeAgents ?? p.active_agents,
      dbSize: line?.dbSize ?? p.db_size_bytes,
      decisions: p.decisions_proposed,
      error: line?.error,
      archived: p.status === 'archived',
    });
  }
  return [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
}

function ProjectCard({ p }: { p: ProjectLine }) {
  const total = STATUSES.reduce((n, st) => n + (p.summary[st] ?? 0), 0);
  return (
    <Link href={`/projects/${p.id}`} class="project" title={`Open the board of ${p.id}`}>
      <div class="project-head">
        <strong>{p.name}</strong>
        {p.name !== p.id && <code>{p.id}</code>}
        {p.archived && <Badge kind="cancelled">archived</Badge>}
      </div>
      {p.error && <div class="error">{p.error}</div>}
      <div class="bar" aria-label="tasks by status">
        {STATUSES.map((st) =>
          p.summary[st] ? <span key={st} class={`seg s-${st}`} style={{ flexGrow: p.summary[st] }} title={`${st}: ${p.summary[st]}`} /> : null,
        )}
        {total === 0 && <span class="seg" style={{ flexGrow: 1 }} />}
      </div>
      <div class="counts">
        {STATUSES.filter((st) => p.summary[st]).map((st) => (
          <span key={st}>
            <i class={`dot s-${st}`} /> {st} {p.summary[st]}
          </span>
        ))}
        {total === 0 && <span>no tasks</span>}
      </div>
      <div class="meta">
        <span>{p.activeAgents} running</span>
        {p.decisions ? <span class="attn">{p.decisions} awaiting approval</span> : null}
        {/* A blackboard file's size; a PostgreSQL schema reports none. */}
        {p.dbSize ? <span>{fmtBytes(p.dbSize)}</span> : null}
      </div>
    </Link>
  );
}

function inSeconds(ms: number): string {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return 'overdue';
  return s < 120 ? `in ${s}s` : `in ${Math.round(s / 60)}m`;
}
