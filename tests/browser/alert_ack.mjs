// The Events page reads alerts from the store: an alert written before a
// daemon restart is still counted (`urgent 1`) and listed first after it,
// and acknowledging it on the page stores who and when.

import { BASE, ask, assert, cli, run, shot, step } from './lib.mjs';

await run('alert_ack', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  step('an alert, then a daemon restart');
  await cli('bb', '--project', project, 'observe', '--level', 'alert', '--body', 'disk almost full on the build host');
  const [alert] = JSON.parse(await cli('bb', '--project', project, '--json', 'events', '--unacked'));
  assert(alert && alert.level === 'urgent', `no urgent alert: ${JSON.stringify(alert)}`);
  await ask('stop-daemon');
  await ask('start-daemon');

  step('the page counts and lists it from the store');
  await page.goto(`${BASE}/events`);
  const line = page.locator(`[data-testid=alerts] [data-event="${project}:${alert.id}"]`);
  await line.waitFor({ timeout: 15000 });
  await line.getByText('disk almost full on the build host').waitFor();
  const urgent = page.locator('button.chip[data-level=urgent] .count');
  await page.waitForFunction(() => document.querySelector('button.chip[data-level=urgent] .count')?.textContent === '1', null, { timeout: 10000 });
  await shot(page, 'alert-unacknowledged');

  step('acknowledge it on the page');
  await line.locator('[data-testid=ack]').click();
  await line.waitFor({ state: 'detached', timeout: 10000 });
  await page.waitForFunction(() => document.querySelector('button.chip[data-level=urgent] .count')?.textContent === '0', null, { timeout: 10000 });
  await page.getByText('No alert waits for acknowledgement.').waitFor();
  await shot(page, 'alert-acknowledged');
  assert((await urgent.textContent()) === '0', 'urgent count after acknowledging');

  step('the store says acknowledged, with who');
  const after = JSON.parse(await cli('bb', '--project', project, '--json', 'events', '--unacked'));
  assert(!after.some((e) => e.id === alert.id), `still unacknowledged: ${JSON.stringify(after)}`);
  const log = await (await fetch(`${BASE}/api/events/log?project=${project}&levels=urgent`)).json();
  const stored = log.events.find((e) => e.id === alert.id);
  assert(stored && stored.acked_by === 'operator:api' && stored.acked_at, `stored: ${JSON.stringify(stored)}`);
  assert(log.unacked.urgent === 0, `unacked: ${JSON.stringify(log.unacked)}`);

  step('a reload shows the same');
  await page.reload();
  await page.getByText('No alert waits for acknowledgement.').waitFor({ timeout: 10000 });
  console.log(`alert ${alert.id}: acknowledged by ${stored.acked_by} at ${stored.acked_at}`);
});
