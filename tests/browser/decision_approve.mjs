// Approving a proposed decision from the page settles it on the blackboard.

import { BASE, assert, cli, hasFullApi, run, shot, step } from './lib.mjs';

if (!(await hasFullApi())) {
  console.log('SKIP: this daemon has no /api/decisions (the API is not merged)');
  process.exit(0);
}

await run('decision_approve', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  step('propose a decision through the CLI');
  const proposed = JSON.parse(
    await cli('bb', '--project', project, '--json', 'decide', '--propose', '--question', 'Restart the payment service?', '--decision', 'restart payment-api', '--rationale', 'memory leak'),
  );
  assert(proposed.status === 'proposed', `decide answered ${JSON.stringify(proposed)}`);

  await page.goto(`${BASE}/decisions`);
  const item = page.locator(`[data-decision="${project}:${proposed.id}"]`);
  await item.waitFor({ timeout: 15000 });
  await item.getByText('Restart the payment service?').waitFor();
  await shot(page, 'decision-proposed');

  step('approve it on the page');
  await item.locator('input[aria-label=Rationale]').fill('approved from the dashboard test');
  await item.locator('[data-action=approve]').click();
  await item.locator('.ok', { hasText: 'approved' }).waitFor({ timeout: 10000 });
  await shot(page, 'decision-approved');

  step('the blackboard says approved');
  const after = JSON.parse(await cli('bb', '--project', project, '--json', 'decision', 'show', String(proposed.id)));
  assert(after.status === 'approved', `decision is ${after.status} on the blackboard`);
  assert(after.decided_by, 'decided_by is empty');
  console.log(`decision ${proposed.id}: ${after.status} by ${after.decided_by}`);
});
