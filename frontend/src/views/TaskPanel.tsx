// Task detail: description, dependencies, comments (with a form), outputs,
// reviews by round, and sessions with a live log tail.

import { useEffect, useRef, useState } from 'preact/hooks';
import { enc, get, post, type Comment, type RunSandbox, type Task, type TaskDetail } from '../api';
import { ACTIVITY, useEventRev, useEvents } from '../live';
import { isNewer } from '../tasks';
import { Badge, Empty, ErrorBox, Link, PriorityPill, Time, navigate, useFetch } from '../ui';
import { TaskActions } from './TaskActions';

export function TaskPanel({ project, taskId }: { project: string; taskId: string }) {
  const base = `/api/projects/${enc(project)}/tasks/${enc(taskId)}`;
  // Refetched on the events of this task (comments, outputs, runs) and of the
  // tasks it is linked to (their status shows here); liveness beats only
  // update the row in place.
  const detailRef = useRef<TaskDetail | undefined>(undefined);
  const rev = useEventRev((ev) => {
    if (ev.project !== project || !ev.task_id || ACTIVITY.has(ev.kind)) return false;
    const d = detailRef.current;
    return (
      ev.task_id === taskId ||
      (ev.kind.startsWith('task.') && !!d && [...d.depends_on, ...d.dependents].some((x) => x.id === ev.task_id))
    );
  });
  const detail = useFetch(`${taskId}:${rev}`, () => get<TaskDetail>(base));
  detailRef.current = detail.data;
  const [row, setRow] = useState<Task | null>(null);
  useEvents((ev) => {
    if (ev.project === project && ev.task_id === taskId && ev.task) setRow(ev.task);
  });
  const loaded = detail.data && detail.data.id === taskId ? detail.data : undefined;
  const t = loaded && row && row.id === taskId && isNewer(row, loaded) ? { ...loaded, ...row } : loaded;
  const [logSession, setLogSession] = useState<string | null>(null);

  useEffect(() => setLogSession(null), [taskId]);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === 'Escape' && navigate(`/projects/${project}`);
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [project]);

  return (
    <aside class="panel" aria-label={`Task ${taskId}`} data-testid="task-panel">
      <header class="panel-head">
        <div>
          <code>{taskId}</code> {t && <Badge kind={`s-${t.status}`}>{t.status}</Badge>}
        </div>
        <Link href={`/projects/${project}`} class="close" title="Close (Esc)">
          ×
        </Link>
      </header>
      <ErrorBox error={detail.error} what="task" />
      {!t && !detail.error && <p class="muted">loading…</p>}
      {t && (
        <div class="panel-body">
          <h2 class="task-heading">{t.title}</h2>
          <TaskActions project={project} task={t} onDone={detail.reload} />
          <dl class="facts">
            <dt>Priority</dt>
            <dd><PriorityPill p={t.priority} /></dd>
            <dt>Kind</dt>
            <dd>{t.kind}</dd>
            <dt>Assignee</dt>
            <dd>{t.claimed_by ?? t.assignee ?? '—'}</dd>
            <dt>Round</dt>
            <dd>{t.round} / {t.max_rounds}</dd>
            {t.review_protocol && (
              <>
                <dt>Review</dt>
                <dd>{t.review_protocol}</dd>
              </>
            )}
            <dt>Created</dt>
            <dd><Time t={t.created_at} /> by {t.creator}</dd>
            <dt>Updated</dt>
            <dd><Time t={t.updated_at} /></dd>
            {t.tags.length > 0 && (
              <>
                <dt>Tags</dt>
                <dd>{t.tags.map((g) => <span class="tag" key={g}>{g}</span>)}</dd>
              </>
            )}
          </dl>
          {t.description && <p class="description">{t.description}</p>}

          {(t.depends_on.length > 0 || t.dependents.length > 0) && (
            <>
              <h3>Dependencies</h3>
              <ul class="deps">
                {t.depends_on.map((d) => (
                  <li key={`d${d.id}`}>
                    needs <Link href={`/projects/${project}/tasks/${d.id}`}>{d.id}</Link> {d.title}{' '}
                    <Badge kind={`s-${d.status}`}>{d.status}</Badge>
                  </li>
                ))}
                {t.dependents.map((d) => (
                  <li key={`r${d.id}`}>
                    unblocks <Link href={`/projects/${project}/tasks/${d.id}`}>{d.id}</Link> {d.title}{' '}
                    <Badge kind={`s-${d.status}`}>{d.status}</Badge>
                  </li>
                ))}
              </ul>
            </>
          )}

          <h3>Reviews</h3>
          {t.reviews.length === 0 ? (
            <Empty>No reviews.</Empty>
          ) : (
            <ul class="items">
              {t.reviews.map((r) => (
                <li key={r.id}>
                  <div class="item-head">
                    <Badge kind={`v-${r.verdict}`}>{r.verdict}</Badge>
                    <span>round {r.round}</span>
                    <span title="confidence">{Math.round(r.confidence * 100)}%</span>
                    <span class="muted">{r.reviewer}{r.protocol ? ` · ${r.protocol}` : ''}</span>
                    <Time t={r.created_at} />
                  </div>
                  {r.body && <p class="pre">{r.body}</p>}
                </li>
              ))}
            </ul>
          )}

          <h3>Outputs</h3>
          {t.outputs.length === 0 ? (
            <Empty>No outputs yet.</Empty>
          ) : (
            <ul class="items">
              {t.outputs.map((o) => (
                <li key={o.id}>
                  <div class="item-head">
                    <strong>{o.agent}</strong>
                    <span>round {o.round}</span>
                    <Time t={o.created_at} />
                  </div>
                  <p>{o.summary}</p>
                  {o.artifact_path && <code class="path">{o.artifact_path}</code>}
                  {o.inline_text && <pre class="inline">{o.inline_text}</pre>}
                </li>
              ))}
            </ul>
          )}

          <h3>Sessions</h3>
          {t.sessions.length === 0 ? (
            <Empty>No runs yet.</Empty>
          ) : (
            <ul class="items">
              {t.sessions.map((s) => (
                <li key={s.id}>
                  <div class="item-head">
                    <strong>{s.agent}</strong>
                    <span>round {s.round}</span>
                    {s.outcome ? <Badge kind={`o-${s.outcome}`}>{s.outcome}</Badge> : <Badge kind="ok">running</Badge>}
                    <Time t={s.started_at} />
                    <span class="muted" data-testid="run-usage" title="tokens and cost the gateway saw; the CLI's own cost beside it when it differs">
                      {s.prompt_tokens.toLocaleString()} in / {s.completion_tokens.toLocaleString()} out tokens · ${s.gateway_cost.toFixed(4)}
                      {s.cost > 0 && Math.abs(s.cost - s.gateway_cost) > 5e-5 && ` (CLI reports $${s.cost.toFixed(4)})`}
                    </span>
                    <button class="small" onClick={() => setLogSession(logSession === s.id ? null : s.id)}>
                      {logSession === s.id ? 'Hide log' : 'Log'}
                    </button>
                  </div>
                  {s.sandbox && <RunSandboxFacts sb={s.sandbox} />}
                  {logSession === s.id && <LogTail project={project} session={s.id} />}
                </li>
              ))}
            </ul>
          )}

          <h3>Comments</h3>
          {t.comments.length === 0 && <Empty>No comments.</Empty>}
          <ul class="items">
            {t.comments.map((c) => (
              <li key={c.id}>
                <div class="item-head">
                  <strong>{c.author}</strong>
                  {c.comment_type !== 'comment' && <Badge kind="muted">{c.comment_type}</Badge>}
                  <Time t={c.created_at} />
                </div>
                <p class="pre">{c.body}</p>
              </li>
            ))}
          </ul>
          <CommentForm url={`${base}/comments`} onDone={detail.reload} />
        </div>
      )}
    </aside>
  );
}

function CommentForm({ url, onDone }: { url: string; onDone: () => void }) {
  const [body, setBody] = useState('');
  const [type, setType] = useState('comment');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!body.trim()) return;
    setBusy(true);
    setError(null);
    try {
      await post<Comment>(url, { body, comment_type: type });
      setBody('');
      onDone();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="comment-form" onSubmit={submit}>
      <textarea
        rows={3}
        placeholder="Add a comment…"
        value={body}
        onInput={(e) => setBody((e.target as HTMLTextAreaElement).value)}
        aria-label="Comment"
      />
      <div class="row">
        <select value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)} aria-label="Comment type">
          {['comment', 'question', 'answer', 'note'].map((k) => (
            <option key={k}>{k}</option>
          ))}
        </select>
        <button class="primary" disabled={busy || !body.trim()}>
          Comment
        </button>
      </div>
      <ErrorBox error={error} />
    </form>
  );
}

/** One normalised transcript item (`[mozi:activity] {"activity":…}` log lines). */
interface Activity {
  kind: 'assistant_text' | 'tool_call' | 'tool_result' | 'usage' | 'error';
  text?: string;
  tool?: string;
  input_tokens?: number;
  output_tokens?: number;
  cost_usd?: number;
}

const ACTIVITY_PREFIX = '[mozi:activity] ';

function activities(text: string): Activity[] {
  const out: Activity[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(ACTIVITY_PREFIX)) continue;
    try {
      out.push((JSON.parse(line.slice(ACTIVITY_PREFIX.length)) as { activity: Activity }).activity);
    } catch {
      // A line cut by the tail window: skip it.
    }
  }
  return out;
}

/** The run's transcript: what the model said, the tools it ran, tokens and cost. */
function Transcript({ items }: { items: Activity[] }) {
  const usage = items.filter((a) => a.kind === 'usage');
  const tokensIn = usage.reduce((n, a) => n + (a.input_tokens ?? 0), 0);
  const tokensOut = usage.reduce((n, a) => n + (a.output_tokens ?? 0), 0);
  const cost = usage.reduce((n, a) => n + (a.cost_usd ?? 0), 0);
  return (
    <div class="transcript" data-testid="transcript">
      <ol class="items">
        {items
          .filter((a) => a.kind !== 'usage')
          .map((a, i) => (
            <li key={i} class={`activity activity-${a.kind}`}>
              <Badge kind={a.kind === 'error' ? 'o-failed' : 'muted'}>{a.kind.replace('_', ' ')}</Badge>
              {a.tool && <code>{a.tool}</code>}
              <span class="pre">{a.text}</span>
            </li>
          ))}
      </ol>
      {usage.length > 0 && (
        <small class="muted">
          CLI reports {tokensIn} in / {tokensOut} out tokens{cost > 0 ? ` · $${cost.toFixed(4)}` : ''}
        </small>
      )}
    </div>
  );
}

/** What a run could touch and reach: its mode (`full` marked unsafe) and,
 * in a sandbox, its paths, network and allowed hosts. */
function RunSandboxFacts({ sb }: { sb: RunSandbox }) {
  const list = (paths: string[]) => (paths.length ? paths.map((p) => <code key={p}>{p}</code>) : '—');
  return (
    <div class="run-sandbox" data-testid="run-sandbox" data-mode={sb.mode}>
      {sb.unsafe ? (
        <p class="run-unsafe">
          <Badge kind="unsafe" title="permissions: full — no sandbox">full · unsafe</Badge> no sandbox: this run could read and
          change anything its user can, and reach any host
        </p>
      ) : sb.mode === 'workspace' ? (
        <p class="muted">
          <Badge kind="workspace">workspace</Badge> no sandbox: the CLI's own limits (bubblewrap was not used)
        </p>
      ) : (
        <dl class="facts">
          <dt>Sandbox</dt>
          <dd><Badge kind="ok">sandbox</Badge></dd>
          <dt>Read-write</dt>
          <dd class="paths">{list(sb.read_write)}</dd>
          <dt>Read-only</dt>
          <dd class="paths">{list(sb.read_only)} and the system</dd>
          <dt>Network</dt>
          <dd>{sb.network ?? '—'} (gateway and API)</dd>
          <dt>Allowed hosts</dt>
          <dd class="paths">{sb.allow_hosts.length ? list(sb.allow_hosts) : 'none'}</dd>
        </dl>
      )}
    </div>
  );
}

/** Live tail of a session log over its SSE stream; a plain read when that fails. */
function LogTail({ project, session }: { project: string; session: string }) {
  const [text, setText] = useState('');
  const [ended, setEnded] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const base = `/api/projects/${enc(project)}/sessions/${enc(session)}/log`;
    let offset = 0;
    let closed = false;
    const src = new EventSource(`${base}/stream?offset=0`);
    src.addEventListener('log', (m) => {
      const d = JSON.parse((m as MessageEvent).data) as { offset: number; text: string };
      if (d.offset < offset) return;
      offset = d.offset + d.text.length;
      setText((t) => (t + d.text).slice(-200_000));
    });
    src.addEventListener('end', () => {
      setEnded(true);
      src.close();
    });
    src.onerror = () => {
      if (src.readyState !== EventSource.CLOSED || closed) return;
      // No stream (older daemon or an error answer): read the log once.
      get<{ text: string; ended: boolean }>(`${base}?offset=0&limit=65536`).then(
        (r) => {
          setText(r.text);
          setEnded(r.ended);
        },
        (e: unknown) => setError(e instanceof Error ? e.message : String(e)),
      );
    };
    return () => {
      closed = true;
      src.close();
    };
  }, [project, session]);
  useEffect(() => {
    const el = pre.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [text]);
  const items = activities(text);
  return (
    <div class="log">
      <ErrorBox error={error} what="log" />
      {items.length > 0 && <Transcript items={items} />}
      <pre ref={pre} data-testid="log">{text || (ended ? '(empty log)' : 'waiting for output…')}</pre>
      <small class="muted">{ended ? 'session ended' : 'live'}</small>
    </div>
  );
}
