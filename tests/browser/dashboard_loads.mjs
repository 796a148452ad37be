// The dashboard loads against a daemon running the demo: overview with the
// daemon state and the demo project, the board with its tasks, a task's
// detail, the gateway panel (with its lane's in-flight reason, admission by
// quota and "no key" for a provider without one), and the same overview at
// phone size.

import { BASE, hasFullApi, run, shot, step } from './lib.mjs';

const full = await hasFullApi();

await run('dashboard_loads', async (page) => {
  step('overview');
  const res = await page.goto(`${BASE}/`);
  if (res.status() !== 200) throw new Error(`GET / answered ${res.status()}`);
  await page.locator('[data-testid=daemon-stats]').waitFor({ timeout: 15000 });
  await page.getByText('running', { exact: true }).first().waitFor();
  await page.locator('a.project', { hasText: 'Demo' }).waitFor({ timeout: 15000 });
  await shot(page, 'overview');

  step('gateway panel');
  await page.locator('nav a', { hasText: 'Gateway' }).click();
  await page.locator('[data-provider]').first().waitFor({ timeout: 15000 });
  await page.locator('.chart canvas').first().waitFor({ timeout: 15000 });
  // The lane says why its in-flight limit is what it is, the bucket reads
  // as requests (not LLM tokens), and admission by quota has its section.
  const reason = await page.locator('[data-role=concurrency-reason]').first().textContent({ timeout: 15000 });
  if (!/in-flight limit: auto: 40\.0\/min x/.test(reason ?? '')) throw new Error(`in-flight reason: ${reason}`);
  await page.getByText('Requests available', { exact: true }).first().waitFor();
  await page.getByText('Admission by quota').waitFor();
  await page.getByText('nvidia: committed / capacity').waitFor({ timeout: 15000 });
  // A provider without a key says "no key", not a green breaker (the
  // built-in ones all showed "breaker closed" though none had a key).
  const gw = await (await fetch(`${BASE}/api/gateway/status`)).json();
  const keyless = gw.providers.filter((p) => !p.api_key);
  if (keyless.length === 0) throw new Error('expected a provider without a key');
  for (const p of gw.providers) {
    const head = await page.locator(`[data-provider="${p.name}"] .item-head`).textContent({ timeout: 15000 });
    const ok = p.api_key ? /breaker/.test(head ?? '') : /no key/.test(head ?? '') && !/breaker/.test(head ?? '');
    if (!ok) throw new Error(`provider ${p.name} (key ${p.api_key ? 'set' : 'unset'}) shows: ${head}`);
  }
  await page.waitForTimeout(2500); // a few points on the charts
  await shot(page, 'gateway');

  if (!full) {
    console.log('NOTE: this daemon has no /api/projects (the API is not merged): board checks skipped');
    return;
  }
  step('board of the demo project');
  await page.locator('.projects-nav a', { hasText: 'demo' }).click();
  await page.locator('[data-testid=board] [data-task]').first().waitFor({ timeout: 15000 });
  const columns = await page.locator('[data-column]').count();
  if (columns !== 7) throw new Error(`expected 7 status columns, saw ${columns}`);
  await shot(page, 'board');

  step('task detail');
  await page.locator('[data-testid=board] a.task').first().click();
  await page.locator('[data-testid=task-panel] .task-heading').waitFor({ timeout: 15000 });
  await page.locator('[data-testid=task-panel] h3', { hasText: 'Comments' }).waitFor();
  await shot(page, 'task');

  step('events page');
  await page.locator('nav a', { hasText: 'Events' }).click();
  await page.locator('[data-level=optional]').click();
  await page.locator('[data-testid=feed] li').first().waitFor({ timeout: 20000 });
  await shot(page, 'events');
});

await run(
  'dashboard_loads_phone',
  async (page) => {
    await page.goto(`${BASE}/`);
    await page.locator('[data-testid=daemon-stats]').waitFor({ timeout: 15000 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Error(`the page is ${overflow}px wider than a phone screen`);
    await shot(page, 'overview-phone');
  },
  { width: 390, height: 844 },
);
