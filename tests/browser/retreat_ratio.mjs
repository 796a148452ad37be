// The limiter's retreat shows its 429 share on the Gateway page (issue 26,
// item 3: the page read "429 ratio —" while the rate was cut). The provider
// `nv` points at a fake that answers every call 429 (it stands in for
// NVIDIA at its limit); two calls cut the rate, and the provider's card
// shows the retreat's share with its counts and the last minute's share.

import { BASE, assert, run, shot, step } from './lib.mjs';

await run('retreat_ratio', async (page) => {
  step('two calls answered 429 by the provider');
  for (let i = 0; i < 2; i++) {
    const r = await fetch(`${BASE}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'nv/m', messages: [{ role: 'user', content: `hi ${i}` }] }),
    });
    assert(r.status === 429, `call ${i} answered ${r.status}`);
  }

  step('the card shows the retreat and its 429 share');
  await page.goto(`${BASE}/gateway`);
  const card = page.locator('.provider[data-provider=nv]');
  const retreat = card.locator('[data-role=retreat-429]');
  await retreat.waitFor({ timeout: 15000 });
  const text = await retreat.innerText();
  assert(/this retreat/.test(text), `the share is the current retreat's: ${text}`);
  assert(/100\.0%/.test(text) && /2 of 2 answers/.test(text), `the share with its counts: ${text}`);
  const stats = await card.locator('dl.stats').innerText();
  assert(/429 ratio \(1 min\)\s*100\.0%/.test(stats), `the last minute's share: ${stats}`);
  assert(/retreat/.test(await card.locator('.item-head').innerText()), 'the card says retreat');
  await shot(page, 'gateway-retreat-ratio');
});
