// First meaningful paint of the dashboard (bench/dashboard.sh runs this):
// N loads of `/`, cold (HTTP cache disabled over CDP) and warm; for each, the
// first contentful paint and the `mozi:first-data` mark, relative to
// navigation start. Prints median and p90.

import { launch } from '../tests/browser/lib.mjs';

const BASE = process.env.MOZI_URL;
const N = Number(process.env.N ?? 20);

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return `median ${at(0.5).toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms, min ${s[0].toFixed(1)} ms (n=${s.length})`;
}

const ctx = await launch({ width: 1400, height: 900 });
const page = ctx.pages()[0] ?? (await ctx.newPage());
const cdp = await ctx.newCDPSession(page);
for (const mode of ['cold', 'warm']) {
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: mode === 'cold' });
  if (mode === 'warm') await page.goto(`${BASE}/`); // fill the cache once
  const fcp = [];
  const data = [];
  for (let i = 0; i < N; i++) {
    await page.goto(`${BASE}/`);
    await page.waitForFunction(() => performance.getEntriesByName('mozi:first-data').length > 0, null, { timeout: 15000 });
    const r = await page.evaluate(() => ({
      fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN,
      data: performance.getEntriesByName('mozi:first-data')[0].startTime,
    }));
    fcp.push(r.fcp);
    data.push(r.data);
  }
  console.log(`${mode}: first contentful paint ${stats(fcp)}`);
  console.log(`${mode}: first data rendered    ${stats(data)}`);
}
await ctx.close();
