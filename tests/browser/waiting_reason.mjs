// A held-back task says why on its card: the daemon holds its agent after an
// infrastructure failure (the agent's program does not exist) and the card
// names the agent, until when, and the failure; a task behind it names its
// dependency. Both without a reload, as the daemon judges them.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

await run('waiting_reason', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  step('create a task for the ghost agent, and one after it');
  const held = await cli('bb', '--project', project, 'create', '--title', 'Needs the ghost', '--kind', 'ghost');
  const after = await cli('bb', '--project', project, 'create', '--title', 'After it', '--kind', 'ghost', '--depends-on', held);
  assert(/^T-\d+$/.test(held) && /^T-\d+$/.test(after), `bb create printed ${held}, ${after}`);

  await page.goto(`${BASE}/projects/${project}`);
  await page.locator('[data-testid=board]').waitFor({ timeout: 15000 });
  const card = (id) => page.locator(`[data-column=pending] a.task:has([data-task="${id}"])`);

  step(`${held}'s card says its agent is held back`);
  const reason = card(held).locator('[data-wait=agent_held]');
  await reason.waitFor({ timeout: 30000 });
  const text = await reason.innerText();
  assert(/^agent ghost, held back until \d{4}-\d\d-\d\dT.* after 1 failure: /.test(text), `held-back reason: ${text}`);

  step(`${after}'s card names its dependency`);
  const dep = card(after).locator('[data-wait=dependencies]');
  await dep.waitFor({ timeout: 15000 });
  assert((await dep.innerText()) === `dependencies ${held} (pending)`, `dependency reason: ${await dep.innerText()}`);
  await shot(page, 'waiting-reason-held-back');
});
