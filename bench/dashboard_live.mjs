// CLI write -> task card updated in the DOM, and task-list requests per event
// (bench/dashboard_live.sh sets up the daemon, the 10,000 tasks and the
// heartbeating agents, then runs this).
//
// The page's own clock stamps the DOM change: before each write a
// MutationObserver is armed for the card's selector in its new column; its
// callback (a microtask right after the mutation, before paint) records
// Date.now(). Node and Chromium share the machine's clock, so the latency is
// that stamp minus Date.now() taken here just before the CLI process starts.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { launch } from '../tests/browser/lib.mjs';

const run = promisify(execFile);
const BASE = process.env.MOZI_URL;
const BIN = process.env.MOZI_BIN;
const PROJECT = process.env.MOZI_PROJECT ?? 'bench';
const N = Number(process.env.N ?? 200);
const IDLE = Number(process.env.IDLE ?? 30);
const FIRST = Number(process.env.FIRST_SAMPLE ?? 16);
const LAST = Number(process.env.LAST_SAMPLE ?? 200);

const LIST = new RegExp(`/api/projects/${PROJECT}/tasks(\\?|$)`);

function stats(xs) {
  if (xs.length === 0) return 'no sample';
  const s = [...xs].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
  return `p50 ${at(0.5).toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms, p99 ${at(0.99).toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms (n=${s.length})`;
}

async function lastEventId() {
  const r = await (await fetch(`${BASE}/api/projects`)).json();
  return r.projects.find((p) => p.id === PROJECT).last_event_id;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ctx = await launch({ width: 1400, height: 900 });
const page = ctx.pages()[0] ?? (await ctx.newPage());
const counts = { pages: 0, refetches: 0 };
page.on('request', (r) => {
  const u = new URL(r.url());
  if (!LIST.test(u.pathname + u.search)) return;
  counts.pages++;
  if (!u.searchParams.has('cursor')) counts.refetches++;
});

await page.goto(`${BASE}/projects/${PROJECT}`);
await page.locator('[data-testid=link-state]', { hasText: 'live' }).waitFor({ timeout: 30000 });
const t0load = Date.now();
const LOAD_LIMIT = Number(process.env.LOAD_LIMIT ?? 120);
let loaded = true;
try {
  await page
    .locator(`[data-column=pending] [data-task="T-${String(FIRST).padStart(4, '0')}"]`)
    .waitFor({ state: 'attached', timeout: LOAD_LIMIT * 1000 });
  const shown = await page.locator('.toolbar .muted').textContent();
  console.log(`board loaded in ${Date.now() - t0load} ms: ${shown}; ${counts.pages} task-list page request(s) until then`);
} catch {
  loaded = false;
  console.log(
    `the board showed no task within ${LOAD_LIMIT} s ("${await page.locator('.toolbar').textContent()}") after ` +
      `${counts.refetches} task-list refetches (${counts.pages} page requests): each refetch was overtaken by the next`,
  );
}
await sleep(3000);

// (b) the quiet window: only the agents' heartbeats write.
{
  const e0 = await lastEventId();
  const c0 = { ...counts };
  await sleep(IDLE * 1000);
  const events = (await lastEventId()) - e0;
  const pages = counts.pages - c0.pages;
  const refetches = counts.refetches - c0.refetches;
  console.log(
    `quiet ${IDLE} s (heartbeats only): ${events} events, ${refetches} task-list refetches, ${pages} task-list page requests` +
      ` = ${(pages / Math.max(1, events)).toFixed(2)} requests per event`,
  );
}

// (a) write -> DOM, with (b) over the same window.
const e0 = await lastEventId();
const c0 = { ...counts };
const lat = { claim: [], done: [] };
const afterExit = [];
let missed = 0;
let crashed = null;
const SAMPLE_LIMIT = Number(process.env.SAMPLE_LIMIT ?? (loaded ? 30 : 2));
const samples = loaded ? N : Number(process.env.N_UNLOADED ?? 10);
let task = FIRST;
for (let i = 0; i < samples; i++) {
  const id = `T-${String(task).padStart(4, '0')}`;
  const verb = i % 2 === 0 ? 'claim' : 'done';
  const column = verb === 'claim' ? 'working' : 'done';
  let t0;
  let t1;
  try {
    await page.evaluate((sel) => {
      window.__hit = null;
      window.__obs?.disconnect();
      const check = () => {
        if (window.__hit === null && document.querySelector(sel)) {
          window.__hit = Date.now();
          window.__obs.disconnect();
        }
      };
      window.__obs = new MutationObserver(check);
      window.__obs.observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
      check();
    }, `[data-column=${column}] [data-task="${id}"]`);
    t0 = Date.now();
    await run(BIN, ['bb', '-p', PROJECT, '--agent', 'bench', verb, id]);
    t1 = Date.now();
    try {
      await page.waitForFunction(() => window.__hit !== null, null, { timeout: SAMPLE_LIMIT * 1000, polling: 20 });
      const hit = await page.evaluate(() => window.__hit);
      lat[verb].push(hit - t0);
      afterExit.push(hit - t1);
    } catch {
      missed++;
    }
  } catch (e) {
    if (page.isClosed() || /closed|crash/i.test(String(e))) {
      crashed = `the page crashed after ${i} write(s): ${String(e).split('\n')[0]}`;
      break;
    }
    throw e;
  }
  if (verb === 'done') task++;
  if (task > LAST) throw new Error(`ran out of sample tasks at sample ${i}: raise LAST_SAMPLE`);
  // A pause of 100-500 ms, so writes land at every phase of the page's work.
  await sleep(100 + Math.random() * 400);
}
if (crashed) console.log(crashed);
const events = (await lastEventId()) - e0;
const pages = counts.pages - c0.pages;
const refetches = counts.refetches - c0.refetches;
if (missed) console.log(`${missed} of ${samples} writes never showed on the board within ${SAMPLE_LIMIT} s`);
console.log(`write -> card in DOM, bb claim: ${stats(lat.claim)}`);
console.log(`write -> card in DOM, bb done:  ${stats(lat.done)}`);
console.log(`write -> card in DOM, all:      ${stats([...lat.claim, ...lat.done])}`);
console.log(`CLI exit -> card in DOM, all:   ${stats(afterExit)}`);
console.log(
  `during the writes: ${events} events (writes and heartbeats), ${refetches} task-list refetches, ${pages} task-list page requests` +
    ` = ${(pages / Math.max(1, events)).toFixed(2)} requests per event`,
);
await ctx.close().catch(() => undefined);
