// Every agent of config/agents.yaml (`GET /api/agents`): runtime, model and
// permissions; what it does now (idle, running which task, held back until
// when and why) with its latest "doing now" line; today's runs and tokens;
// its last run that did not succeed. Read again every few seconds: a run's
// activity and a hold change without a task event.

import { useEffect, useState } from 'preact/hooks';
import { get, type AgentList, type AgentView } from '../api';
import { Empty, ErrorBox, Section, Time, useFetch } from '../ui';

const EVERY_MS = 3000;

export function Agents() {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), EVERY_MS);
    return () => clearInterval(t);
  }, []);
  const list = useFetch(`agents:${tick}`, () => get<AgentList>('/api/agents'));
  const agents = list.data?.agents ?? [];
  return (
    <Section title={`Agents${list.data ? ` (${agents.length})` : ''}`}>
      <ErrorBox error={list.error} what="agents" />
      {list.data && agents.length === 0 && <Empty>config/agents.yaml defines no agent.</Empty>}
      {agents.length > 0 && (
        <table class="agents" data-testid="agents">
          <thead>
            <tr>
              <th>Agent</th>
              <th>Runtime · model</th>
              <th>Permissions</th>
              <th>State</th>
              <th>Doing now</th>
              <th>Today</th>
              <th>Last error</th>
            </tr>
          </thead>
          <tbody>
            {agents.map((a) => (
              <AgentRow key={a.id} a={a} />
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function AgentRow({ a }: { a: AgentView }) {
  return (
    <tr data-agent={a.id}>
      <td>
        <code>{a.id}</code>
        {a.kinds.length > 0 && <div class="muted small">{a.kinds.join(', ')}</div>}
      </td>
      <td>
        {a.runtime}
        {a.model && <span class="muted"> · {a.model}</span>}
      </td>
      <td>{a.permissions}</td>
      <td class={`agent-state st-${a.state}`} data-state={a.state}>
        {a.state_text}
      </td>
      <td class="agent-activity" data-activity>
        {a.activity ?? <span class="muted">—</span>}
      </td>
      <td data-today>
        {a.runs_today} run{a.runs_today === 1 ? '' : 's'} · {a.tokens_today.toLocaleString()} tokens
      </td>
      <td class="agent-error" data-last-error>
        {a.last_error ? (
          <>
            <code>{a.last_error.task}</code> ({a.last_error.project}) {a.last_error.outcome} <Time t={a.last_error.at} />
            {a.last_error.text && <div class="small">{a.last_error.text}</div>}
          </>
        ) : (
          <span class="muted">—</span>
        )}
      </td>
    </tr>
  );
}
