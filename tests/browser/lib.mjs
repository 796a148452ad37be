// Shared helpers of the dashboard browser scripts: launching Debian's
// Chromium through playwright-core, screenshots, and small assertions.
//
// Environment (set by tests/dashboard_browser.rs):
//   MOZI_URL          the daemon's base URL, e.g. http://127.0.0.1:40123
//   MOZI_PLAYWRIGHT   folder whose node_modules holds playwright-core (.tools)
//   MOZI_CHROMIUM     the browser binary (default /usr/bin/chromium)
//   MOZI_SCREENSHOTS  folder for screenshots

import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const BASE = process.env.MOZI_URL ?? 'http://127.0.0.1:8083';
const SHOTS = resolve(process.env.MOZI_SCREENSHOTS ?? 'target/screenshots');

function playwright() {
  const from = resolve(process.env.MOZI_PLAYWRIGHT ?? '.tools');
  return createRequire(join(from, 'node_modules', 'noop.js'))('playwright-core');
}

/**
 * Launches headless Chromium with the flags a closed network needs and a fresh
 * profile (`--user-data-dir`, which playwright passes for a persistent
 * context). Returns the browser context.
 */
export async function launch(viewport = { width: 1400, height: 900 }) {
  const profile = mkdtempSync(join(tmpdir(), 'mozi-chromium-'));
  const browser = await playwright().chromium.launchPersistentContext(profile, {
    viewport,
    executablePath: process.env.MOZI_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  return browser;
}

/** Saves a full-page screenshot and prints its path. */
export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}

export function step(what) {
  console.log(`- ${what}`);
}

/** Runs `body(page, browser)` and exits non-zero with a screenshot on failure. */
export async function run(name, body, viewport = { width: 1400, height: 900 }) {
  const browser = await launch(viewport);
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  try {
    await body(page, browser);
    console.log(`ok: ${name}`);
  } catch (e) {
    console.error(`FAILED: ${name}: ${e?.stack ?? e}`);
    try {
      await shot(page, `${name}-failure`);
    } catch {
      /* the page may be gone */
    }
    console.error(consoleLines.slice(-30).join('\n'));
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  // An open stdin reader would keep node alive after the script is done.
  if (stdinReader) {
    stdinReader.close();
    process.stdin.destroy();
    stdinReader = null;
    stdinLines = null;
  }
}

// ---- the harness protocol: actions the Rust test performs for a script ----

let stdinLines = null;
let stdinReader = null;

/**
 * Asks the Rust test to do something only it may do (stop or start the
 * daemon it owns) and waits for its answer line.
 */
export async function ask(action) {
  if (!stdinLines) {
    const { createInterface } = await import('node:readline');
    stdinReader = createInterface({ input: process.stdin });
    stdinLines = stdinReader[Symbol.asyncIterator]();
  }
  console.log(`@@ACTION ${action}`);
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== 'ok') throw new Error(`harness refused ${action}: ${value}`);
}

/** Runs the `moziplus` CLI of the test (MOZI_BIN, MOZI_HOME) and returns stdout. */
export async function cli(...args) {
  const { execFileSync } = await import('node:child_process');
  return execFileSync(process.env.MOZI_BIN, args, { encoding: 'utf8', env: process.env }).trim();
}

/** Whether the daemon serves the full API (docs/API.md), not only /api/daemon/*. */
export async function hasFullApi() {
  const r = await fetch(`${BASE}/api/projects`);
  return r.status !== 404;
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}
