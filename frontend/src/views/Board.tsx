// A project's board: one column per status, refetched live as the project's
// events arrive; the task detail opens beside it.

import { useState } from 'preact/hooks';
import { STATUSES, allTasks, type Task } from '../api';
import { useProjectRev } from '../live';
import { Badge, ErrorBox, Link, useFetch, useThrottled } from '../ui';
import { TaskPanel } from './TaskPanel';

export function Board({ project, taskId }: { project: string; taskId: string | null }) {
  const rev = useThrottled(useProjectRev(project), 300);
  const tasks = useFetch(`${project}:${rev}`, () => allTasks(project));
  const [filter, setFilter] = useState('');
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
          <span class="muted">{tasks.data ? `${shown.length} of ${tasks.data.length} tasks` : tasks.loading ? 'loading…' : ''}</span>
        </div>
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
                    <TaskCard key={t.id} t={t} project={project} selected={t.id === taskId} />
                  ))}
                </div>
              </div>
            );
          })}
        </div>
      </div>
      {taskId && <TaskPanel project={project} taskId={taskId} rev={rev} />}
    </div>
  );
}

function TaskCard({ t, project, selected }: { t: Task; project: string; selected: boolean }) {
  const who = t.claimed_by ?? t.assignee;
  return (
    <Link href={`/projects/${project}/tasks/${t.id}`} class={`task${selected ? ' selected' : ''}`}>
      <div class="task-top" data-task={t.id}>
        <code>{t.id}</code>
        <Badge kind={`p-${t.priority}`}>{t.priority}</Badge>
        {t.round > 1 && <span class="round" title={`round ${t.round} of ${t.max_rounds}`}>r{t.round}/{t.max_rounds}</span>}
      </div>
      <div class="task-title">{t.title}</div>
      <div class="task-meta">
        <span class="kind">{t.kind}</span>
        {who && <span class="who">@{who}</span>}
      </div>
    </Link>
  );
}
