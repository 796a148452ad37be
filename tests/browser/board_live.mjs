// A task moves across the board live: created, claimed and finished through
// the CLI while the page stays open (no reload), each step seen in its column.

import { BASE, assert, cli, hasFullApi, run, shot, step } from './lib.mjs';

if (!(await hasFullApi())) {
  console.log('SKIP: this daemon has no /api/projects (the API is not merged)');
  process.exit(0);
}

await run('board_live', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  await page.goto(`${BASE}/projects/${project}`);
  await page.locator('[data-testid=board]').waitFor({ timeout: 15000 });
  await page.locator('[data-testid=link-state]', { hasText: 'live' }).waitFor({ timeout: 15000 });
  let loads = 0;
  page.on('load', () => loads++);

  step('create (kind manual: no demo agent takes it, so --force)');
  const id = await cli('bb', '--project', project, 'create', '--title', 'Walk across the board', '--kind', 'manual', '--force', '--priority', 'high');
  assert(/^T-\d+$/.test(id), `bb create printed ${id}`);
  const card = (status) => page.locator(`[data-column=${status}] [data-task="${id}"]`);
  await card('pending').waitFor({ timeout: 10000 });
  await shot(page, 'board-live-pending');

  step(`claim ${id}`);
  await cli('bb', '--project', project, '--agent', 'tester', 'claim', id);
  await card('working').waitFor({ timeout: 10000 });
  assert((await card('pending').count()) === 0, 'the card stayed in pending');
  await page.locator(`[data-column=working] a.task:has([data-task="${id}"])`, { hasText: 'tester' }).waitFor();
  await shot(page, 'board-live-working');

  step(`done ${id}`);
  await cli('bb', '--project', project, '--agent', 'tester', 'done', id);
  await card('done').waitFor({ timeout: 10000 });
  assert((await card('working').count()) === 0, 'the card stayed in working');
  assert(loads === 0, `the page reloaded ${loads} time(s)`);
  await shot(page, 'board-live-done');
});
