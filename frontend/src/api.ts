// The daemon's HTTP API (docs/API.md): record shapes and small fetch helpers.

import type { components } from './api.gen';

// Record shapes come from the daemon's OpenAPI document (`/api/openapi.json`),
// generated into api.gen.ts by openapi-typescript; tests/dashboard_api_types.rs
// fails when that file is stale. Never edit it by hand.
type Schemas = components['schemas'];

export type Status = Schemas['TaskStatus'];
export const STATUSES: Status[] = ['pending', 'working', 'review', 'done', 'blocked', 'failed', 'cancelled'];
export type Priority = Schemas['Priority'];
export type Level = 'urgent' | 'attention' | 'daily' | 'optional';
export const LEVELS: Level[] = ['urgent', 'attention', 'daily', 'optional'];

export type Task = Schemas['Task'];
export type DependencyRef = Schemas['DependencyRef'];
export type Comment = Schemas['Comment'];
export type Output = Schemas['Output'];
export type Review = Schemas['Review'];
export type Session = Schemas['Session'];
/** What a run could touch and reach (`session.sandbox`). */
export type RunSandbox = Schemas['RunSandbox'];
export type TaskDetail = Schemas['TaskDetail'];
/** Why a task is not moving (`waiting_for` of a listed task or a detail). */
export type Wait = Schemas['Wait'];
/** `GET /api/agents`. */
export type AgentList = Schemas['AgentList'];
export type AgentView = Schemas['AgentView'];
/** A decision; `project` is set where several projects' decisions are listed. */
export type Decision = Schemas['Decision'] & { project?: string };
export type Experience = Schemas['Experience'];
export type Skill = Schemas['SkillInfo'];
export type Project = Schemas['Project'];
export type Schedule = Schemas['Schedule'];
export type ScheduleDetail = Schemas['ScheduleDetail'];
export type ScheduleFiring = Schemas['ScheduleFiring'];
/** An event from the store, with its project and acknowledgement. */
export type StoredEvent = Schemas['StoredEvent'];
/** A page of `/api/events/log`. */
export type EventLog = Schemas['EventLog'];

// The daemon's status document, its runs in flight and the gateway's status
// (`/api/daemon/status`, `/api/daemon/sessions`, `/api/gateway/status`).
export type DaemonStatus = Schemas['DaemonStatus'];
export type ProjectStatus = Schemas['ProjectStatus'];
/** A run that cannot start for the machine's reasons (see README, Runtimes). */
export type Degraded = Schemas['Problem'];
export type RunInfo = Schemas['RunInfo'];
/** A run in flight with its task's title and what it does (`/api/daemon/sessions`). */
export type ActiveRun = Schemas['ActiveRun'];
export type DaemonSessions = Schemas['DaemonSessions'];
export type GatewayStatus = Schemas['GatewayStatus'];
export type GatewaySettings = Schemas['RuntimeSettings'];
export type ProviderStatus = Schemas['ProviderStatus'];
export type Lane = Schemas['LaneSnapshot'];
export type Bucket = Schemas['BucketSnapshot'];
/** `/api/gateway/history`: stored samples, one per lane every 10 s. */
export type GatewayHistory = Schemas['GatewayHistory'];
export type GatewaySample = Schemas['GatewaySample'];

// Not (yet) described in the OpenAPI document: the SSE frames are written by
// hand.
export interface BbEvent {
  project: string; id: number; created_at: string; level: Level; kind: string;
  task_id: string | null; actor: string; payload: unknown;
  /** `task.*` events: the task's row as the daemon read it after the change. */
  task?: Task;
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

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
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

/**
 * Why each open task of a project waits (pending, blocked and working ones,
 * the 500 most urgent), by task id (`GET …/waiting`).
 */
export async function taskWaits(project: string): Promise<Map<string, Wait[]>> {
  const r: Schemas['WaitingTasks'] = await get(`/api/projects/${enc(project)}/waiting`);
  return new Map(Object.entries(r.waiting));
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
