// The Schedules view: a schedule added by the CLI shows its next firing;
// Run now fires it (the history row and the last instance appear), Pause and
// Resume change it on the blackboard.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

await run('schedules_view', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  step('add a schedule through the CLI');
  const added = JSON.parse(
    await cli('schedule', 'add', '--project', project, '--id', 'standup', '--cron', '0 9 * * *', '--timezone', 'Europe/Berlin', '--title', 'standup {{ date }}', '--kind', 'manual', '--force', '--json'),
  );
  assert(added.next_at, `no next firing: ${JSON.stringify(added)}`);

  await page.goto(`${BASE}/projects/${project}/schedules`);
  const item = page.locator('[data-schedule="standup"]');
  await item.waitFor({ timeout: 15000 });
  const next = await item.locator('[data-testid=next-firing]').textContent();
  assert(/^in \d+[smhd]$/.test(next.trim()), `next firing shows ${next}`);
  await item.getByText('Not fired yet.').waitFor();
  await shot(page, 'schedules-added');

  step('run it now from the page');
  await item.locator('[data-action=run]').click();
  const row = item.locator('[data-testid=history] tr[data-reason=manual]');
  await row.waitFor({ timeout: 10000 });
  const taskId = (await row.locator('a').textContent()).trim();
  assert(/^T-\d+$/.test(taskId), `history links ${taskId}`);
  await item.getByText(taskId).first().waitFor();
  await shot(page, 'schedules-fired');

  step('pause it, then resume it');
  await item.locator('[data-action=pause]').click();
  await item.locator('[data-action=resume]').waitFor({ timeout: 10000 });
  let shown = JSON.parse(await cli('schedule', 'show', '--project', project, 'standup', '--json'));
  assert(shown.schedule.enabled === false, 'paused on the blackboard');
  assert(shown.firings[0].task_id === taskId, `the blackboard has ${JSON.stringify(shown.firings[0])}`);
  await item.locator('[data-action=resume]').click();
  await item.locator('[data-action=pause]').waitFor({ timeout: 10000 });
  shown = JSON.parse(await cli('schedule', 'show', '--project', project, 'standup', '--json'));
  assert(shown.schedule.enabled === true, 'resumed on the blackboard');

  step('a firing made elsewhere appears live');
  const t = JSON.parse(await cli('schedule', 'run-now', '--project', project, 'standup', '--json'));
  await item.getByText(t.id).first().waitFor({ timeout: 10000 });
  await shot(page, 'schedules-live');
  console.log(`schedule standup fired ${taskId} and ${t.id}`);
});
