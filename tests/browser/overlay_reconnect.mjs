// The "reconnecting" overlay appears when the daemon stops, and disappears by
// itself when it is started again on the same port; an event written while it
// was away (the CLI works without the daemon) arrives after the reconnect.

import { BASE, ask, cli, hasFullApi, run, shot, step } from './lib.mjs';

if (!(await hasFullApi())) {
  console.log('SKIP: this daemon has no /api/events (the API is not merged)');
  process.exit(0);
}

await run('overlay_reconnect', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  await page.goto(`${BASE}/events`);
  await page.locator('[data-testid=link-state]', { hasText: 'live' }).waitFor({ timeout: 15000 });
  const overlay = page.locator('[data-testid=reconnecting]');
  await page.waitForTimeout(1000);
  if (await overlay.isVisible()) throw new Error('overlay visible while the daemon is up');

  step('stop the daemon');
  await ask('stop-daemon');
  const stoppedAt = Date.now();
  await overlay.waitFor({ state: 'visible', timeout: 15000 });
  console.log(`overlay after ${Date.now() - stoppedAt} ms of silence`);
  await shot(page, 'overlay-reconnecting');

  step('write an event while the daemon is away');
  const id = await cli('bb', '--project', project, 'create', '--title', 'Created while the daemon was away', '--kind', 'manual', '--force');

  step('start the daemon on the same port');
  await ask('start-daemon');
  const startedAt = Date.now();
  await overlay.waitFor({ state: 'hidden', timeout: 30000 });
  console.log(`overlay gone ${Date.now() - startedAt} ms after the restart`);
  await page.locator('[data-testid=feed] li', { hasText: id }).first().waitFor({ timeout: 15000 });
  await shot(page, 'overlay-recovered');
});
