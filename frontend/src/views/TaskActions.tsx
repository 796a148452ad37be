// Operator actions on a task (status transitions, priority, assignee) and the
// new-task form. Every write goes through api.ts, which sends the token when
// one is set; the daemon refuses cross-origin writes.

import { useEffect, useState } from 'preact/hooks';
import { enc, post, request, type Priority, type Status, type Task } from '../api';
import { PRIORITIES } from '../priority';
import { ErrorBox, navigate } from '../ui';


/** The transitions an operator may make from each status (the store's lifecycle). */
const TRANSITIONS: Record<Status, { to: Status; label: string; action: string }[]> = {
  pending: [
    { to: 'blocked', label: 'Block', action: 'block' },
    { to: 'cancelled', label: 'Cancel', action: 'cancel' },
  ],
  working: [
    { to: 'blocked', label: 'Block', action: 'block' },
    { to: 'cancelled', label: 'Cancel', action: 'cancel' },
  ],
  review: [{ to: 'cancelled', label: 'Cancel', action: 'cancel' }],
  blocked: [
    { to: 'pending', label: 'Unblock', action: 'unblock' },
    { to: 'cancelled', label: 'Cancel', action: 'cancel' },
  ],
  failed: [{ to: 'pending', label: 'Retry', action: 'retry' }],
  cancelled: [{ to: 'pending', label: 'Reopen', action: 'reopen' }],
  done: [],
};

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Buttons for the task's transitions, and its priority and assignee. */
export function TaskActions({ project, task, onDone }: { project: string; task: Task; onDone: () => void }) {
  const base = `/api/projects/${enc(project)}/tasks/${enc(task.id)}`;
  const [reason, setReason] = useState('');
  const [priority, setPriority] = useState<Priority>(task.priority);
  const [assignee, setAssignee] = useState(task.assignee ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setPriority(task.priority);
    setAssignee(task.assignee ?? '');
  }, [task.id, task.priority, task.assignee]);

  const run = async (write: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await write();
      setReason('');
      onDone();
    } catch (e) {
      setError(message(e));
    } finally {
      setBusy(false);
    }
  };
  const open = task.status !== 'done' && task.status !== 'failed' && task.status !== 'cancelled';
  const edited = priority !== task.priority || assignee.trim() !== (task.assignee ?? '');
  return (
    <div class="task-actions" data-testid="task-actions">
      <div class="row">
        {TRANSITIONS[task.status].map((t) => (
          <button
            key={t.action}
            data-action={t.action}
            disabled={busy}
            class={t.to === 'cancelled' ? 'danger' : ''}
            onClick={() => run(() => post<Task>(`${base}/status`, { status: t.to, reason: reason.trim() }))}
          >
            {t.label}
          </button>
        ))}
        {TRANSITIONS[task.status].length > 0 && (
          <input
            placeholder="reason (optional)"
            value={reason}
            onInput={(e) => setReason((e.target as HTMLInputElement).value)}
            aria-label="Reason"
          />
        )}
      </div>
      {open && (
        <div class="row">
          <select
            value={priority}
            onChange={(e) => setPriority((e.target as HTMLSelectElement).value as Priority)}
            aria-label="Priority"
          >
            {PRIORITIES.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
          <input
            placeholder="assignee (any agent)"
            value={assignee}
            onInput={(e) => setAssignee((e.target as HTMLInputElement).value)}
            aria-label="Assignee"
          />
          <button
            data-action="save"
            disabled={busy || !edited}
            onClick={() =>
              run(() => request<Task>('PATCH', base, { priority, assignee: assignee.trim() }))
            }
          >
            Save
          </button>
        </div>
      )}
      <ErrorBox error={error} />
    </div>
  );
}

/** The new-task form: title, kind, priority, assignee, description. */
export function NewTaskForm({ project, onClose }: { project: string; onClose: () => void }) {
  const [title, setTitle] = useState('');
  const [kind, setKind] = useState('');
  const [priority, setPriority] = useState<Priority>('normal');
  const [assignee, setAssignee] = useState('');
  const [description, setDescription] = useState('');
  const [force, setForce] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!title.trim()) return;
    setBusy(true);
    setError(null);
    try {
      const body: Record<string, unknown> = { title: title.trim(), priority, force };
      if (kind.trim()) body.kind = kind.trim();
      if (assignee.trim()) body.assignee = assignee.trim();
      if (description.trim()) body.description = description.trim();
      const t = await post<Task>(`/api/projects/${enc(project)}/tasks`, body);
      onClose();
      navigate(`/projects/${project}/tasks/${t.id}`);
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="new-task" onSubmit={submit} data-testid="new-task">
      <div class="row">
        <input
          placeholder="Title"
          value={title}
          onInput={(e) => setTitle((e.target as HTMLInputElement).value)}
          aria-label="Title"
          required
        />
        <input placeholder="kind (default task)" value={kind} onInput={(e) => setKind((e.target as HTMLInputElement).value)} aria-label="Kind" />
        <select value={priority} onChange={(e) => setPriority((e.target as HTMLSelectElement).value as Priority)} aria-label="New priority">
          {PRIORITIES.map((p) => (
            <option key={p}>{p}</option>
          ))}
        </select>
        <input placeholder="assignee (any agent)" value={assignee} onInput={(e) => setAssignee((e.target as HTMLInputElement).value)} aria-label="New assignee" />
      </div>
      <textarea
        rows={2}
        placeholder="Description"
        value={description}
        onInput={(e) => setDescription((e.target as HTMLTextAreaElement).value)}
        aria-label="Description"
      />
      <div class="row">
        <label title="Create it even if no configured agent could take it yet">
          <input type="checkbox" checked={force} onChange={(e) => setForce((e.target as HTMLInputElement).checked)} aria-label="Force" /> force
        </label>
        <button class="primary" disabled={busy || !title.trim()} data-action="create">
          Create
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <ErrorBox error={error} />
    </form>
  );
}
