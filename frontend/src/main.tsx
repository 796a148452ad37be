// The moziplus dashboard: the app shell, its routes and the
// "reconnecting" overlay.
//
// Routes: /                        overview
//         /projects/ID             board   (/projects/ID/tasks/TASK: with the task open)
//         /projects/ID/knowledge   skills and experiences
//         /projects/ID/schedules   schedules: next firing, history, pause/resume/run-now
//         /agents  /events  /decisions  /gateway  /costs  /config

import { render } from 'preact';
import { get, type Project } from './api';
import { startLive, useLive } from './live';
import { Link, useFetch, useRoute } from './ui';
import { Agents } from './views/Agents';
import { Board } from './views/Board';
import { Config } from './views/Config';
import { Costs } from './views/Costs';
import { Decisions } from './views/Decisions';
import { Events } from './views/Events';
import { Gateway } from './views/Gateway';
import { Knowledge } from './views/Knowledge';
import { Overview } from './views/Overview';
import { Schedules } from './views/Schedules';
import './styles.css';

function App() {
  const route = useRoute();
  const live = useLive();
  const projects = useFetch(`projects:${live.epoch}`, () =>
    get<{ projects: Project[] }>('/api/projects').then(
      (r) => r.projects.filter((p) => p.status !== 'archived').map((p) => p.id),
      () => get<{ projects: Record<string, unknown> }>('/api/daemon/status').then((s) => Object.keys(s.projects)),
    ),
  );
  const [top, id, sub, arg] = route;
  const project = top === 'projects' && id ? id : null;
  return (
    <>
      <header class="top">
        <Link href="/" class="brand">
          <span class="logo">m+</span> moziplus
        </Link>
        <nav>
          <Link href="/" class={top === undefined ? 'active' : ''}>Overview</Link>
          <Link href="/agents" class={top === 'agents' ? 'active' : ''}>Agents</Link>
          <Link href="/events" class={top === 'events' ? 'active' : ''}>Events</Link>
          <Link href="/decisions" class={top === 'decisions' ? 'active' : ''}>Decisions</Link>
          <Link href="/gateway" class={top === 'gateway' ? 'active' : ''}>Gateway</Link>
          <Link href="/costs" class={top === 'costs' ? 'active' : ''}>Costs</Link>
          <Link href="/config" class={top === 'config' ? 'active' : ''}>Config</Link>
        </nav>
        <LinkDot />
      </header>
      {(projects.data?.length ?? 0) > 0 && (
        <nav class="projects-nav" aria-label="Projects">
          {projects.data?.map((p) => (
            <Link key={p} href={`/projects/${p}`} class={p === project ? 'active' : ''}>
              {p}
            </Link>
          ))}
        </nav>
      )}
      <main data-ready={live.link === 'live' ? '1' : '0'}>
        {project ? (
          <>
            <div class="subnav">
              <h1>{project}</h1>
              <Link href={`/projects/${project}`} class={sub !== 'knowledge' && sub !== 'schedules' ? 'active' : ''}>Board</Link>
              <Link href={`/projects/${project}/schedules`} class={sub === 'schedules' ? 'active' : ''}>Schedules</Link>
              <Link href={`/projects/${project}/knowledge`} class={sub === 'knowledge' ? 'active' : ''}>Skills &amp; experiences</Link>
            </div>
            {sub === 'knowledge' ? (
              <Knowledge project={project} />
            ) : sub === 'schedules' ? (
              <Schedules project={project} />
            ) : (
              <Board project={project} taskId={sub === 'tasks' && arg ? arg : null} />
            )}
          </>
        ) : top === 'agents' ? (
          <Agents />
        ) : top === 'events' ? (
          <Events />
        ) : top === 'decisions' ? (
          <Decisions />
        ) : top === 'gateway' ? (
          <Gateway />
        ) : top === 'costs' ? (
          <Costs />
        ) : top === 'config' ? (
          <Config />
        ) : (
          <div class="overview-grid">
            <Overview />
            <div class="stack">
              <Decisions />
              <Events limit={30} />
            </div>
          </div>
        )}
      </main>
      <Overlay />
    </>
  );
}

function LinkDot() {
  const live = useLive();
  const text = { connecting: 'connecting', live: 'live', reconnecting: 'reconnecting', unsupported: 'polling' }[live.link];
  return (
    <span class={`link-dot ${live.link}`} title={`event stream: ${text}`} data-testid="link-state">
      <i /> {text}
    </span>
  );
}

function Overlay() {
  const live = useLive();
  if (live.link !== 'reconnecting') return null;
  return (
    <div class="overlay" role="status" aria-live="polite" data-testid="reconnecting">
      <div class="overlay-box">
        <span class="spinner" aria-hidden="true" />
        <div>
          <strong>Reconnecting…</strong>
          <p>No word from the daemon for 5 seconds. Events are resumed from where they stopped once it answers.</p>
        </div>
      </div>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
void startLive();
