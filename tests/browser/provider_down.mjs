// A provider outage shows on the overview: two calls to the provider `down`
// (nothing listens at its address) open its breaker, and the overview's
// "Degraded" banner names the provider and the breaker's reason, without a
// reload, with a link to the Gateway tab.

import { BASE, assert, run, shot, step } from './lib.mjs';

await run('provider_down', async (page) => {
  step('the overview is calm before any call');
  await page.goto(`${BASE}/`);
  await page.locator('[data-testid=daemon-stats]').waitFor({ timeout: 15000 });
  assert((await page.locator('[data-testid=degraded]').count()) === 0, 'a degraded banner before any failure');

  step('two calls fail and open the breaker');
  for (let i = 0; i < 2; i++) {
    const r = await fetch(`${BASE}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'down/m', messages: [{ role: 'user', content: `hi ${i}` }] }),
    });
    assert(r.status >= 500, `call ${i} answered ${r.status}`);
  }

  step('the banner names the provider and why');
  const problem = page.locator('[data-testid=degraded] [data-testid=provider-problem]');
  await problem.waitFor({ timeout: 30000 });
  const text = await problem.innerText();
  assert(/provider down/.test(text), `the banner names the provider: ${text}`);
  assert(/breaker open after 2 consecutive failures/.test(text), `the banner says why: ${text}`);
  const link = problem.locator('a');
  assert((await link.getAttribute('href')) === '/gateway', `the banner links to the Gateway tab: ${await link.getAttribute('href')}`);
  step('the status is read again: the last tick stays recent (interval 1 s)');
  await page.waitForTimeout(7000);
  const stats = await page.locator('[data-testid=daemon-stats]').innerText();
  const age = /Last tick\s*(\d+)s ago/.exec(stats);
  assert(age && Number(age[1]) <= 6, `the last tick reads ${age?.[0] ?? stats}`);
  await shot(page, 'overview-provider-down');
});
