// Task actions on the page: create a task with the form, reprioritise and
// reassign it, block and unblock it, cancel and reopen it; a failed task is
// retried; the daemon is paused and resumed from the overview. Each change
// is checked on the blackboard through the CLI, or on the daemon's status.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

await run('task_actions', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  // The task as the API reads it from the blackboard.
  const read = async (id) => {
    const r = await fetch(`${BASE}/api/projects/${project}/tasks/${id}`);
    assert(r.ok, `GET ${id}: ${r.status}`);
    return r.json();
  };
  const waitFor = async (id, pred, what) => {
    for (let i = 0; i < 100; i++) {
      const t = await read(id);
      if (pred(t)) return t;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${id} never became ${what}: ${JSON.stringify(await read(id))}`);
  };

  await page.goto(`${BASE}/projects/${project}`);
  step('create a task with the form');
  await page.locator('[data-action=new-task]').click();
  const form = page.locator('[data-testid=new-task]');
  await form.locator('input[aria-label=Title]').fill('Rotate the signing keys');
  await form.locator('input[aria-label=Kind]').fill('manual');
  await form.locator('select[aria-label="New priority"]').selectOption('low');
  await form.locator('input[aria-label=Force]').check();
  await shot(page, 'task-actions-form');
  await form.locator('[data-action=create]').click();
  const panel = page.locator('[data-testid=task-panel]');
  await panel.getByText('Rotate the signing keys').waitFor({ timeout: 10000 });
  const id = (await panel.locator('.panel-head code').textContent()).trim();
  assert(/^T-\d+$/.test(id), `panel shows ${id}`);
  let t = await waitFor(id, (x) => x.status === 'pending' && x.priority === 'low', 'pending/low');
  assert(t.kind === 'manual', `kind ${t.kind}`);

  const actions = panel.locator('[data-testid=task-actions]');
  step('reprioritise and reassign');
  await actions.locator('select[aria-label=Priority]').selectOption('urgent');
  await actions.locator('input[aria-label=Assignee]').fill('ghost');
  await actions.locator('[data-action=save]').click();
  // ghost is no agent of the team: refused with the reason, nothing changed.
  await actions.locator('.error').waitFor({ timeout: 10000 });
  assert(/ghost/.test(await actions.locator('.error').textContent()), 'the refusal names ghost');
  t = await read(id);
  assert(t.priority === 'low', 'a refused edit changed nothing');
  await actions.locator('input[aria-label=Assignee]').fill('');
  await actions.locator('[data-action=save]').click();
  await waitFor(id, (x) => x.priority === 'urgent', 'urgent');
  await panel.locator('.badge.b-p-urgent').first().waitFor({ timeout: 10000 });
  await page.locator(`[data-column=pending] [data-task="${id}"] .badge.b-p-urgent`).waitFor({ timeout: 10000 });
  await shot(page, 'task-actions-reprioritised');
  // One colour per priority (frontend/src/priority.ts): the pill is in the
  // same colour the charts draw urgent with.
  const pill = await page.locator(`[data-column=pending] [data-task="${id}"] .badge.b-p-urgent`).evaluate((el) => getComputedStyle(el).color);
  assert(pill === 'rgb(217, 48, 54)', `the urgent pill is ${pill}, not PRIORITY_COLOR.urgent (#d93036)`);

  step('block, then unblock');
  await actions.locator('input[aria-label=Reason]').fill('waiting on legal');
  await actions.locator('[data-action=block]').click();
  await waitFor(id, (x) => x.status === 'blocked', 'blocked');
  await page.locator(`[data-column=blocked] [data-task="${id}"]`).waitFor({ timeout: 10000 });
  await actions.locator('[data-action=unblock]').click();
  await waitFor(id, (x) => x.status === 'pending', 'pending again');

  step('cancel, then reopen');
  await actions.locator('[data-action=cancel]').click();
  await waitFor(id, (x) => x.status === 'cancelled', 'cancelled');
  await actions.locator('[data-action=reopen]').click();
  await waitFor(id, (x) => x.status === 'pending', 'reopened');

  step('retry a failed task');
  const failed = JSON.parse(
    await cli('bb', '--project', project, '--json', 'create', '--title', 'Flaky deploy', '--kind', 'manual', '--force'),
  );
  await cli('bb', '--project', project, '--agent', 'tester', 'claim', failed.id);
  await cli('bb', '--project', project, '--agent', 'tester', 'fail', failed.id, '--reason', 'exit 1');
  await page.goto(`${BASE}/projects/${project}/tasks/${failed.id}`);
  await waitFor(failed.id, (x) => x.status === 'failed', 'failed');
  await panel.locator('[data-action=retry]').click();
  const retried = await waitFor(failed.id, (x) => x.status === 'pending', 'pending after retry');
  assert(retried.round === 2, `retry grants another round: round ${retried.round}`);
  await shot(page, 'task-actions-retried');

  step('pause the daemon, then resume it');
  const ticker = async () => {
    const r = await fetch(`${BASE}/api/daemon/status`);
    assert(r.ok, `GET status: ${r.status}`);
    return (await r.json()).ticker_running;
  };
  const tickerBecomes = async (want) => {
    for (let i = 0; i < 100; i++) {
      if ((await ticker()) === want) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the ticker never became ${want ? 'running' : 'paused'}`);
  };
  await page.goto(`${BASE}/`);
  assert((await ticker()) === true, 'the ticker runs before the pause');
  await page.locator('[data-testid=pause]').click();
  await tickerBecomes(false);
  await page.locator('[data-testid=resume]').waitFor({ timeout: 10000 });
  await shot(page, 'daemon-paused');
  await page.locator('[data-testid=resume]').click();
  await tickerBecomes(true);
  await page.locator('[data-testid=pause]').waitFor({ timeout: 10000 });
  console.log(`task ${id} and ${failed.id} acted on from the page`);
});
