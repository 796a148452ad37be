// The Costs view: charts of the stored ledger (three days of usage written
// before the daemon started, so nothing of it happened while the page was
// open) per day, project, agent and model; the budgets as bars with their
// use; the form sets a budget through the API; the task panel shows each
// run's tokens and cost.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

/** Pixels of the canvas under `figure` near the colour `[r, g, b]`. */
async function strokePixels(figure, rgb) {
  return figure.locator('canvas').evaluate((c, rgb) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) < 30 && Math.abs(d[i + 1] - rgb[1]) < 30 && Math.abs(d[i + 2] - rgb[2]) < 30) n++;
    }
    return n;
  }, rgb);
}

const width = async (locator) => locator.evaluate((e) => e.getBoundingClientRect().width);

await run('costs_view', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  await page.goto(`${BASE}/costs`);
  const total = page.locator('[data-testid=costs-total]');
  await total.waitFor({ timeout: 15000 });
  step('totals and charts from the stored ledger');
  const text = await total.textContent();
  assert(text.startsWith('30 responses'), `total: ${text}`);
  const charts = page.locator('figure.chart');
  assert((await charts.count()) === 2, 'a tokens and a USD chart');
  const tokenPixels = await strokePixels(charts.nth(0), [0x4f, 0x7c, 0xff]);
  const usdPixels = await strokePixels(charts.nth(1), [0x30, 0xa4, 0x6c]);
  assert(tokenPixels > 50 && usdPixels > 50, `the day charts draw their lines: ${tokenPixels} / ${usdPixels} pixels`);
  for (const [kind, keys] of [
    ['project', [project]],
    ['agent', ['coder', 'reviewer']],
    ['model', ['nvidia/qwen/qwen3.5-397b', 'nvidia/deepseek-ai/deepseek-v4-pro']],
  ]) {
    for (const key of keys) {
      const row = page.locator(`[data-bars=${kind}] tr[data-key="${key}"]`);
      assert((await row.count()) === 1, `a ${kind} bar for ${key}`);
      const bars = row.locator('.bar');
      assert((await width(bars.nth(0))) > 2 && (await width(bars.nth(1))) > 2, `${key}'s tokens and USD bars are drawn`);
    }
  }

  step('the budget set before the daemon started, as a bar with its use');
  const day = page.locator(`[data-budget="project:${project}:day"]`);
  await day.waitFor({ timeout: 10000 });
  const meter = day.locator('.budget-meter[data-unit=tokens]');
  const used = await meter.textContent();
  assert(/10[,.\s]?400\s*\/\s*100[,.\s]?000 tokens/.test(used), `today's tokens of the project: ${used}`);
  const share = (await width(meter.locator('span'))) / (await width(meter));
  assert(share > 0.09 && share < 0.12, `the bar shows 10.4% used: ${share}`);
  assert((await day.locator('.tag').textContent()) === 'override', 'set at run time');

  step('set a budget from the page');
  const form = page.locator('[data-testid=budget-form]');
  await form.locator('input[name=budget]').fill('home:day');
  await form.locator('input[name=tokens]').fill('50000');
  await form.locator('[data-action=set-budget]').click();
  await page.locator('[data-testid=budget-done]').waitFor({ timeout: 10000 });
  const home = page.locator('[data-budget="home:day"]');
  await home.waitFor({ timeout: 10000 });
  const homeUsed = await home.locator('.budget-meter[data-unit=tokens]').textContent();
  assert(/10[,.\s]?400\s*\/\s*50[,.\s]?000 tokens/.test(homeUsed), `the home's day: ${homeUsed}`);
  const bind = new URL(BASE).host;
  const listed = JSON.parse(await cli('budget', 'list', '--json', '--bind', bind));
  const line = listed.budgets.find((b) => b.budget === 'home:day');
  assert(line && line.limit_tokens === 50000 && line.source === 'override', `the daemon has it: ${JSON.stringify(line)}`);
  await shot(page, 'costs-view');

  step("the task panel shows each run's tokens and cost");
  const usage = await (await fetch(`${BASE}/api/usage`)).json();
  const task = usage.by_task[0].key.split('/')[1];
  await page.goto(`${BASE}/projects/${project}/tasks/${task}`);
  const runs = page.locator('[data-testid=run-usage]');
  await runs.first().waitFor({ timeout: 15000 });
  const shown = (await runs.allTextContents()).join(' | ');
  assert(/10[,.\s]?500 in \/ 2[,.\s]?400 out tokens · \$0\.0360/.test(shown), `the coder's run: ${shown}`);
  assert(/19[,.\s]?500 in \/ 2[,.\s]?400 out tokens · \$0\.0660/.test(shown), `the reviewer's run: ${shown}`);
  await shot(page, 'costs-task-panel');
});
