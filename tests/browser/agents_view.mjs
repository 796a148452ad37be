// The Agents tab: each agent's runtime, permissions, state (running T-n,
// held back until …), its "doing now" line, today's runs and its last
// error, updated without a reload while the daemon runs them; and the
// overview's active sessions with their task titles, one waiting on a
// decision its run proposed.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

await run('agents_view', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  step('a task for the ghost (held back) and one for the slow agent (running)');
  const held = await cli('bb', '--project', project, 'create', '--title', 'Needs the ghost', '--kind', 'ghost');
  const busy = await cli('bb', '--project', project, 'create', '--title', 'Slow work', '--kind', 'slow');

  await page.goto(`${BASE}/agents`);
  await page.locator('[data-testid=agents]').waitFor({ timeout: 15000 });
  const row = (id) => page.locator(`tr[data-agent=${id}]`);

  step('the slow agent runs its task and says what it is doing');
  await row('slow').locator('[data-state=running]', { hasText: `running ${busy} (${project})` }).waitFor({ timeout: 30000 });
  await row('slow').locator('[data-activity]', { hasText: 'reading the spec' }).waitFor({ timeout: 30000 });
  const today = await row('slow').locator('[data-today]').innerText();
  assert(today.startsWith('1 run'), `slow's day: ${today}`);

  step('the ghost is held back, with its last error');
  const state = row('ghost').locator('[data-state=held]');
  await state.waitFor({ timeout: 30000 });
  const text = await state.innerText();
  assert(text.startsWith(`held back on ${project} until `), `ghost's state: ${text}`);
  const error = await row('ghost').locator('[data-last-error]').innerText();
  assert(error.includes(held) && error.includes('infrastructure failure'), `ghost's last error: ${error}`);
  assert((await row('ghost').innerText()).includes('command'), 'the runtime is shown');
  await shot(page, 'agents-view');

  step('active sessions show their task title; a run waiting on its decision says so');
  const asked = await cli('bb', '--project', project, 'create', '--title', 'Needs a decision', '--kind', 'ask');
  await page.goto(`${BASE}/`);
  const waiting = page.locator('tr[data-session] [data-state=waiting]', { hasText: 'waiting on decision D' });
  await waiting.waitFor({ timeout: 30000 });
  const tr = page.locator('tr[data-session]', { hasText: 'waiting on decision D' });
  assert((await tr.innerText()).includes(`${asked} Needs a decision`), `the waiting run's row: ${await tr.innerText()}`);
  const working = page.locator('tr[data-session]', { hasText: 'Slow work' });
  assert((await working.locator('[data-state=working]').innerText()).startsWith('working'), 'the slow run works');
  await shot(page, 'sessions-waiting-on-decision');
});
