// Two daemons on one PostgreSQL store: the overview of either lists both,
// with host, agents, runs, which one leads and when each was last seen.

import { BASE, assert, run, shot, step } from './lib.mjs';

await run('cluster_view', async (page) => {
  step('the overview lists the cluster');
  await page.goto(`${BASE}/`);
  const table = page.locator('[data-testid=cluster]');
  await table.waitFor({ timeout: 15000 });
  step('both daemons are there, alive, one of them the leader');
  let rows = 0;
  for (let i = 0; i < 40 && rows < 2; i++) {
    rows = await table.locator('tbody tr[data-daemon]').count();
    if (rows < 2) await page.waitForTimeout(500);
  }
  assert(rows === 2, `two daemons listed: ${rows}`);
  const text = await table.innerText();
  assert((text.match(/leader/g) ?? []).length === 1, `exactly one leader: ${text}`);
  assert(/this one/.test(text), `this daemon is marked: ${text}`);
  assert(/\bw\b/.test(text), `each daemon's agents are shown: ${text}`);
  const heading = await page.locator('h2', { hasText: 'Cluster' }).innerText();
  assert(/2 daemons alive/.test(heading), `the heading counts the alive daemons: ${heading}`);
  await shot(page, 'overview-cluster');
});
