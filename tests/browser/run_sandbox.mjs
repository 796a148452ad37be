// A run's sandbox on the task panel: a sandboxed run shows its mode, the
// folders it could change and read, its network and the allowed hosts; a
// `full` run is marked unsafe. Both runs are real (the daemon's own
// bubblewrap run, and an unsandboxed one); the page reads what the daemon
// stored with each session.

import { BASE, assert, cli, run, shot, step } from './lib.mjs';

await run('run_sandbox', async (page) => {
  const project = process.env.MOZI_PROJECT ?? 'live';
  const boxed = await cli('bb', '--project', project, 'create', '--title', 'Work in the sandbox', '--kind', 'boxed');
  const open = await cli('bb', '--project', project, 'create', '--title', 'Work with full permissions', '--kind', 'open');
  assert(/^T-\d+$/.test(boxed) && /^T-\d+$/.test(open), `bb create printed ${boxed}, ${open}`);

  const sandboxOf = async (id) => {
    const panel = page.locator('[data-testid=task-panel]');
    await page.goto(`${BASE}/projects/${project}/tasks/${id}`);
    await panel.locator('.panel-head code', { hasText: id }).waitFor({ timeout: 15000 });
    const sb = panel.locator('[data-testid=run-sandbox]');
    // The run ends fast; the panel refetches on its events.
    await sb.first().waitFor({ timeout: 60000 });
    return sb.first();
  };

  step(`${boxed}'s run shows its sandbox`);
  const sb = await sandboxOf(boxed);
  assert((await sb.getAttribute('data-mode')) === 'sandbox', `mode ${await sb.getAttribute('data-mode')}`);
  const text = await sb.innerText();
  for (const expected of [`/projects/${project}/workspaces/${boxed}`, '/tmp/S-', 'registry.example:443', '127.0.0.1:', 'and the system']) {
    assert(text.includes(expected), `the sandbox shows ${expected}:\n${text}`);
  }
  assert(!/unsafe/.test(text), `a sandboxed run is not marked unsafe:\n${text}`);
  await shot(page, 'run-sandbox');

  step(`${open}'s run is marked unsafe`);
  const full = await sandboxOf(open);
  assert((await full.getAttribute('data-mode')) === 'full', `mode ${await full.getAttribute('data-mode')}`);
  const fullText = await full.innerText();
  assert(/full · unsafe/.test(fullText) && /no sandbox/.test(fullText), `full run:\n${fullText}`);
  await shot(page, 'run-sandbox-full-unsafe');
});
