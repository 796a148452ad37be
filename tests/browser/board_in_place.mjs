// CLI writes update the board in place: a task created, claimed, kept alive
// by heartbeats and finished through the CLI shows in its column with no
// request for the project's task list (the events carry the task's row).
// Positive control in the same page: a `resync` frame (the daemon restarted,
// and its stream's first frame after the restart replaced by `event: resync`)
// does refetch the list, so the request counter is shown to see them; and a
// reload is counted by the page-load counter that must stay at 0 above.

import { BASE, ask, assert, cli, run, shot, step } from './lib.mjs';

await run('board_in_place', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  const list = new RegExp(`/api/projects/${project}/tasks(\\?|$)`);
  let listRequests = 0;
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (list.test(u.pathname + u.search)) listRequests++;
  });
  await page.goto(`${BASE}/projects/${project}`);
  await page.locator('[data-testid=board]').waitFor({ timeout: 15000 });
  await page.locator('[data-testid=link-state]', { hasText: 'live' }).waitFor({ timeout: 15000 });
  await page.locator('.toolbar .muted', { hasText: 'tasks' }).waitFor({ timeout: 15000 });
  assert(listRequests >= 1, `the board's first load made ${listRequests} task-list requests`);
  await page.waitForTimeout(500);
  const firstLoad = listRequests;
  let loads = 0;
  page.on('load', () => loads++);
  const card = (status, id) => page.locator(`[data-column=${status}] [data-task="${id}"]`);

  step('create');
  const id = await cli('bb', '--project', project, 'create', '--title', 'Updated in place', '--kind', 'manual', '--force', '--priority', 'high');
  assert(/^T-\d+$/.test(id), `bb create printed ${id}`);
  await card('pending', id).waitFor({ timeout: 10000 });

  step(`claim ${id}, three heartbeats`);
  await cli('bb', '--project', project, '--agent', 'tester', 'claim', id);
  await card('working', id).waitFor({ timeout: 10000 });
  assert((await card('pending', id).count()) === 0, 'the card stayed in pending');
  await page.locator(`[data-column=working] a.task:has([data-task="${id}"])`, { hasText: 'tester' }).waitFor();
  for (let i = 0; i < 3; i++) await cli('bb', '--project', project, '--agent', 'tester', 'heartbeat', id);

  step(`done ${id}`);
  await cli('bb', '--project', project, '--agent', 'tester', 'done', id);
  await card('done', id).waitFor({ timeout: 10000 });
  assert((await card('working', id).count()) === 0, 'the card stayed in working');
  // Time for any refetch an event would have caused (the old board's
  // throttle was 300 ms) to be requested.
  await page.waitForTimeout(1500);
  assert(loads === 0, `the page reloaded ${loads} time(s)`);
  assert(
    listRequests === firstLoad,
    `the CLI writes caused ${listRequests - firstLoad} task-list request(s); the events should carry the change`,
  );
  await shot(page, 'board-in-place-done');

  step('positive control: a resync refetches the list');
  let resyncs = 0;
  await page.route(
    (url) => url.pathname === '/api/events',
    (route) => {
      resyncs++;
      return route.fulfill({
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
        body: 'event: resync\ndata: {"reason":"test: resync","cursor":""}\n\n',
      });
    },
    { times: 1 },
  );
  // The stream ends with the daemon; the browser's reconnect gets the frame.
  await ask('stop-daemon');
  await ask('start-daemon');
  const deadline = Date.now() + 30000;
  while (listRequests === firstLoad && Date.now() < deadline) await page.waitForTimeout(100);
  assert(resyncs === 1, `the stream was reopened ${resyncs} time(s) through the resync route`);
  assert(listRequests > firstLoad, 'a resync did not refetch the task list');
  await page.locator('[data-testid=link-state]', { hasText: 'live' }).waitFor({ timeout: 30000 });
  await card('done', id).waitFor({ timeout: 10000 });

  step('positive control: a reload is counted');
  const loadsBefore = loads;
  await page.reload();
  await page.locator('[data-testid=board]').waitFor({ timeout: 15000 });
  assert(loads === loadsBefore + 1, `a reload was counted ${loads - loadsBefore} time(s)`);
});
