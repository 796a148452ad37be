// The daemon's HTTP API (docs/API.md): record shapes and small fetch helpers.

export type Status = 'pending' | 'working' | 'review' | 'done' | 'blocked' | 'failed' | 'cancelled';
export const STATUSES: Status[] = ['pending', 'working', 'review', 'done', 'blocked', 'failed', 'cancelled'];
export type Priority = 'urgent' | 'high' | 'normal' | 'low';
export type Level = 'urgent' | 'attention' | 'daily' | 'optional';
export const LEVELS: Level[] = ['urgent', 'attention', 'daily', 'optional'];

export interface Task {
  id: string;
  title: string;
  description: string;
  kind: string;
  status: Status;
  priority: Priority;
  assignee: string | null;
  claimed_by: string | null;
  creator: string;
  parent_id: string | null;
  review_protocol: string | null;
  round: number;
  max_rounds: number;
  lease_expires_at: string | null;
  created_at: string;
  updated_at: string;
  claimed_at: string | null;
  finished_at: string | null;
  tags: string[];
}

export interface DependencyRef { id: string; title: string; status: Status }
export interface Comment { id: number; author: string; comment_type: string; body: string; created_at: string }
export interface Output {
  id: number; agent: string; round: number; summary: string;
  artifact_path: string | null; inline_text: string | null; created_at: string;
}
export interface Review {
  id: number; reviewer: string; protocol: string | null; round: number;
  verdict: 'approve' | 'revise' | 'reject'; confidence: number; body: string; created_at: string;
}
export interface Session {
  id: string; task_id: string; agent: string; round: number; started_at: string;
  ended_at: string | null; exit_code: number | null; outcome: string | null;
  prompt_tokens: number; completion_tokens: number; cost: number;
}
export interface TaskDetail extends Task {
  depends_on: DependencyRef[];
  dependents: DependencyRef[];
  comments: Comment[];
  outputs: Output[];
  reviews: Review[];
  sessions: Session[];
}
export interface Decision {
  id: number; project?: string; task_id: string | null; author: string; question: string;
  decision: string; rationale: string; status: 'proposed' | 'approved' | 'rejected';
  decided_by: string | null; expires_at: string | null; created_at: string;
}
export interface Experience {
  id: number; task_id: string | null; agent: string; lesson: string; tags: string[];
  times_referenced: number; status: string; created_at: string;
}
export interface Skill {
  id: string; name: string; description: string; tags: string[]; source: string; path: string;
}
export interface BbEvent {
  project: string; id: number; created_at: string; level: Level; kind: string;
  task_id: string | null; actor: string; payload: unknown;
  /** `task.*` events: the task's row as the daemon read it after the change. */
  task?: Task;
}
export interface Project {
  id: string; name: string; description: string; status: string;
  tasks_summary: Record<string, number>; active_agents: number; db_size_bytes: number;
  decisions_proposed: number; last_event_id: number;
}
export interface ProjectStatus {
  active_agents: number; tasks_summary?: Record<string, number>; db_size_bytes?: number; error?: string;
}
export interface DaemonStatus {
  ticker_running: boolean; last_tick: string | null; last_tick_ms: number | null; ticks: number;
  tick_interval_seconds: number; projects: Record<string, ProjectStatus>; inbox_pending: number;
  active_sessions: number; runs_started: number; gateway: GatewayStatus | null;
  limits: { max_global_agents: number; max_per_agent: number };
  /** Runs that cannot start for the machine's reasons (see README, Runtimes). */
  degraded?: Degraded[];
  unusable_review_protocols?: { protocol: string; reason: string }[];
}
export interface Degraded {
  project: string; agent: string; runtime: string; reason: string; failures: number;
  since_ms: number; retry_at_ms: number;
}
export interface RunInfo {
  session_id: string; project: string; task_id: string; agent: string; kind: string;
  pid: number; started_at_ms: number; deadline_ms: number;
}

export interface Bucket {
  tokens: number; capacity: number; base_rate_per_minute: number; effective_rate_per_minute: number;
  retreat_state: 'normal' | 'retreat' | 'recover'; ratio_429_retreat_window: number | null;
  ratio_429_recover_window: number | null; samples: number; granted_last_minute: number;
  paused_for_seconds: number;
}
export interface Lane {
  bucket: Bucket; queue_depth: Record<Priority, number>; queue_len: number; queue_max: number;
  full_policy: string; in_flight: number; concurrency: number; counters: Record<string, number>;
}
export interface ProviderStatus {
  name: string; base_url: string; limited: boolean; api_key: string | null; fallback: string | null;
  breaker: { state: string; consecutive_failures: number; open_for_seconds: number; times_opened: number };
  lane: Lane | null; requests: Record<string, number>;
}
export interface GatewaySettings {
  rate_per_minute: number; capacity: number; queue_max_size: number; full_policy: string;
  concurrency: number; request_timeout: number; low_priority_timeout: number;
}
export interface GatewayStatus {
  uptime_seconds: number; settings: GatewaySettings; default_provider: string | null;
  providers: ProviderStatus[];
}

/** An error answer of the API, with its message. */
export class ApiFailure extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

const TOKEN_KEY = 'moziplus.token';
export const token = {
  get: (): string => sessionStorage.getItem(TOKEN_KEY) ?? '',
  set: (t: string) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY)),
};

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: fall through with the text */
  }
  if (!res.ok) {
    const msg = (json as { error?: { message?: string } } | null)?.error?.message ?? (text || res.statusText);
    throw new ApiFailure(res.status, msg);
  }
  return json as T;
}

export const get = <T>(path: string) => request<T>('GET', path);
export const post = <T>(path: string, body: unknown = {}) => request<T>('POST', path, body);
export const put = <T>(path: string, body: unknown) => request<T>('PUT', path, body);

export const enc = encodeURIComponent;

/** Pages of 500 read by `allTasks`: the board shows at most 5,000 tasks. */
const TASK_PAGES = 10;

/**
 * Every task of a project, following `next_cursor` (bounded); `complete` is
 * false when the bound cut the list short.
 */
export async function allTasks(project: string): Promise<{ tasks: Task[]; complete: boolean }> {
  const out: Task[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < TASK_PAGES; page++) {
    const q: string = cursor ? `&cursor=${enc(cursor)}` : '';
    const r: { tasks: Task[]; next_cursor: string | null } = await get(`/api/projects/${enc(project)}/tasks?limit=500${q}`);
    out.push(...r.tasks);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return { tasks: out, complete: cursor === null };
}

export function ago(t: string | number | null | undefined): string {
  if (t === null || t === undefined) return '—';
  const ms = typeof t === 'number' ? t : Date.parse(t);
  if (!Number.isFinite(ms)) return String(t);
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function fmtBytes(n: number | undefined): string {
  if (n === undefined || n === null) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
