// A project's board: one column per status, loaded once (and again on
// resync) and kept current in place from the task rows the events carry; the
// task detail opens beside it.

import { Component } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { STATUSES, allTasks, enc, get, taskWaits, type BbEvent, type Task, type Wait } from '../api';
import { useEpoch, useEvents } from '../live';
import { isNewer, upsertTask } from '../tasks';
import { ErrorBox, Link, PriorityPill } from '../ui';
import { NewTaskForm } from './TaskActions';
import { TaskPanel } from './TaskPanel';

interface Loaded {
  project: string;
  tasks: Task[];
  /** False when the list was cut at the page bound. */
  complete: boolean;
}

/** The project's tasks: loaded on mount and resync, then updated from events. */
function useLiveTasks(project: string) {
  const epoch = useEpoch();
  const [board, setBoard] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Rows that arrive while a load runs, applied on top of its answer.
  const early = useRef<Map<string, Task> | null>(null);
  useEffect(() => {
    let current = true;
    early.current = new Map();
    allTasks(project).then(
      (r) => {
        if (!current) return;
        let tasks = r.tasks;
        for (const t of early.current?.values() ?? []) tasks = upsertTask(tasks, t, r.complete);
        early.current = null;
        setBoard({ project, tasks, complete: r.complete });
        setError(null);
      },
      (e: unknown) => {
        if (!current) return;
        early.current = null;
        setError(e instanceof Error ? e.message : String(e));
      },
    );
    return () => {
      current = false;
    };
  }, [project, epoch]);
  const apply = (t: Task) => {
    const pending = early.current;
    if (pending) {
      if (isNewer(t, pending.get(t.id))) pending.set(t.id, t);
      return;
    }
    setBoard((b) => {
      if (!b || b.project !== project) return b;
      const tasks = upsertTask(b.tasks, t, b.complete);
      return tasks === b.tasks ? b : { ...b, tasks };
    });
  };
  useEvents((ev: BbEvent) => {
    if (ev.project !== project || !ev.task_id || !ev.kind.startsWith('task.')) return;
    if (ev.task) apply(ev.task);
    // A daemon that could not attach the row: read this one task.
    else get<Task>(`/api/projects/${enc(project)}/tasks/${enc(ev.task_id)}`).then(apply, () => undefined);
  });
  return { data: board && board.project === project ? board.tasks : undefined, error };
}

/** How often the cards' reasons are read again: the daemon judges them each tick. */
const WAITS_EVERY_MS = 5000;

/**
 * Why each task waits, by id: read on mount, every few seconds (the
 * daemon's reasons change without an event) and soon after a task event.
 * An unchanged list keeps its array, so its card does not re-render.
 */
function useWaits(project: string): Map<string, Wait[]> {
  const epoch = useEpoch();
  const [waits, setWaits] = useState<Map<string, Wait[]>>(new Map());
  const [nudge, setNudge] = useState(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    let current = true;
    const load = () =>
      taskWaits(project).then(
        (fresh) => {
          if (!current) return;
          setWaits((old) => {
            const merged = new Map<string, Wait[]>();
            for (const [id, w] of fresh) {
              const prev = old.get(id);
              merged.set(id, prev && JSON.stringify(prev) === JSON.stringify(w) ? prev : w);
            }
            return merged;
          });
        },
        () => undefined,
      );
    load();
    const every = setInterval(load, WAITS_EVERY_MS);
    return () => {
      current = false;
      clearInterval(every);
    };
  }, [project, epoch, nudge]);
  useEvents((ev: BbEvent) => {
    if (ev.project !== project || !ev.kind.startsWith('task.')) return;
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      setNudge((n) => n + 1);
    }, 700);
  });
  return waits;
}

/** Statuses a task can wait in. */
const CAN_WAIT = new Set(['pending', 'blocked', 'working']);

export function Board({ project, taskId }: { project: string; taskId: string | null }) {
  const tasks = useLiveTasks(project);
  const waits = useWaits(project);
  const [filter, setFilter] = useState('');
  const [creating, setCreating] = useState(false);
  const q = filter.trim().toLowerCase();
  const shown = (tasks.data ?? []).filter(
    (t) =>
      !q ||
      t.id.toLowerCase().includes(q) ||
      t.title.toLowerCase().includes(q) ||
      (t.assignee ?? t.claimed_by ?? '').toLowerCase().includes(q) ||
      t.tags.some((g) => g.toLowerCase().includes(q)),
  );
  const byStatus = new Map(STATUSES.map((s) => [s, [] as Task[]]));
  for (const t of shown) byStatus.get(t.status)?.push(t);

  return (
    <div class={taskId ? 'board-wrap with-panel' : 'board-wrap'}>
      <div class="board-main">
        <div class="toolbar">
          <input
            type="search"
            placeholder="Filter by id, title, agent, tag…"
            value={filter}
            onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
            aria-label="Filter tasks"
          />
          <span class="muted">{tasks.data ? `${shown.length} of ${tasks.data.length} tasks` : tasks.error ? '' : 'loading…'}</span>
          <button class="primary" data-action="new-task" onClick={() => setCreating(!creating)}>
            New task
          </button>
        </div>
        {creating && <NewTaskForm project={project} onClose={() => setCreating(false)} />}
        <ErrorBox error={tasks.error} what="tasks" />
        <div class="board" data-testid="board">
          {STATUSES.map((status) => {
            const list = byStatus.get(status) ?? [];
            return (
              <div class={`column c-${status}`} data-column={status} key={status}>
                <h3>
                  <i class={`dot s-${status}`} /> {status} <span class="count">{list.length}</span>
                </h3>
                <div class="cards">
                  {list.map((t) => (
                    <TaskCard
                      key={t.id}
                      t={t}
                      project={project}
                      selected={t.id === taskId}
                      waits={CAN_WAIT.has(t.status) ? waits.get(t.id) : undefined}
                    />
                  ))}
                </div>
              </div>
            );
          })}
        </div>
      </div>
      {taskId && <TaskPanel project={project} taskId={taskId} />}
    </div>
  );
}

interface CardProps {
  t: Task;
  project: string;
  selected: boolean;
  /** Why it waits (none: it does not). */
  waits?: Wait[];
}

/** One card; re-renders only when its row or selection changes. */
class TaskCard extends Component<CardProps> {
  shouldComponentUpdate(next: CardProps) {
    return (
      next.t !== this.props.t ||
      next.selected !== this.props.selected ||
      next.project !== this.props.project ||
      next.waits !== this.props.waits
    );
  }

  render({ t, project, selected, waits }: CardProps) {
    const who = t.claimed_by ?? t.assignee;
    return (
      <Link href={`/projects/${project}/tasks/${t.id}`} class={`task${selected ? ' selected' : ''}`}>
        <div class="task-top" data-task={t.id}>
          <code>{t.id}</code>
          <PriorityPill p={t.priority} />
          {t.round > 1 && <span class="round" title={`round ${t.round} of ${t.max_rounds}`}>r{t.round}/{t.max_rounds}</span>}
        </div>
        <div class="task-title">{t.title}</div>
        <div class="task-meta">
          <span class="kind">{t.kind}</span>
          {who && <span class="who">@{who}</span>}
        </div>
        {waits && waits.length > 0 && (
          <div class="task-waits" data-waits={t.id}>
            {waits.map((w) => (
              <div class={`task-wait w-${w.reason}`} data-wait={w.reason} title={w.text} key={w.reason + w.text}>
                {w.text}
              </div>
            ))}
          </div>
        )}
      </Link>
    );
  }
}
