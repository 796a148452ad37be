// A project's skills and experiences.

import { ApiFailure, enc, get, type Experience, type Skill } from '../api';
import { useEventRev } from '../live';
import { Badge, Empty, ErrorBox, Link, Section, Time, useFetch, useThrottled } from '../ui';

export function Knowledge({ project }: { project: string }) {
  const rev = useThrottled(
    useEventRev((ev) => ev.project === project && ev.kind.startsWith('experience.')),
    2000,
  );
  // A daemon without the skills route (older build) answers 404: say so plainly.
  const skills = useFetch(`s${project}`, () =>
    get<{ skills: Skill[] }>(`/api/projects/${enc(project)}/skills`).catch((e: unknown) => {
      if (e instanceof ApiFailure && e.status === 404 && /no route/.test(e.message)) return null;
      throw e;
    }),
  );
  const exps = useFetch(`e${project}:${rev}`, () => get<{ experiences: Experience[] }>(`/api/projects/${enc(project)}/experiences`));
  return (
    <div class="stack">
      <Section title="Skills">
        <ErrorBox error={skills.error} what="skills" />
        {skills.data === null && <Empty>This daemon does not list skills yet.</Empty>}
        {skills.data && skills.data.skills.length === 0 && <Empty>No skills for this project yet.</Empty>}
        <ul class="items">
          {skills.data?.skills.map((s) => (
            <li key={`${s.source}:${s.id}`}>
              <div class="item-head">
                <strong>{s.name}</strong>
                <Badge kind="muted">{s.source}</Badge>
                {s.tags.map((t) => (
                  <span class="tag" key={t}>{t}</span>
                ))}
              </div>
              <p>{s.description}</p>
              <code class="path">{s.path}</code>
            </li>
          ))}
        </ul>
      </Section>
      <Section title="Experiences">
        <ErrorBox error={exps.error} what="experiences" />
        {exps.data && exps.data.experiences.length === 0 && <Empty>No experiences recorded yet.</Empty>}
        <ul class="items">
          {exps.data?.experiences.map((x) => (
            <li key={x.id}>
              <div class="item-head">
                <Badge kind={x.status === 'active' ? 'ok' : 'muted'}>{x.status}</Badge>
                <strong>{x.agent}</strong>
                {x.task_id && <Link href={`/projects/${project}/tasks/${x.task_id}`}>{x.task_id}</Link>}
                {x.tags.map((t) => (
                  <span class="tag" key={t}>{t}</span>
                ))}
                <span class="muted">referenced {x.times_referenced}×</span>
                <Time t={x.created_at} />
              </div>
              <p class="pre">{x.lesson}</p>
            </li>
          ))}
        </ul>
      </Section>
    </div>
  );
}
