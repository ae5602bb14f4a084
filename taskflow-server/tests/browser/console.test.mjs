// Browser test of the web console, in headless Debian Chromium driven by playwright-core.
//
// Run by the Rust test that spawns `taskflow standalone` (with a failure injected through
// TASKFLOW_INJECT_FAILURES), which passes:
//   TASKFLOW_URL         the console URL with the token, e.g. http://127.0.0.1:PORT/?token=T
//   TASKFLOW_API         the server's base URL, e.g. http://127.0.0.1:PORT
//   TASKFLOW_FAILED_TASK (optional) the task the injected failure makes fail; default: any
//   TASKFLOW_SCREENSHOT  (optional) where to write a PNG of the page at the end
//   TASKFLOW_CHROMIUM    (optional) the browser binary; default /usr/bin/chromium
// and runs `node --test console.test.mjs` in this directory (after `npm ci`).
//
// The scenario (issue 5): open the console and see the 17-task graph; press *execute* on the
// manual task `day_init` and watch its status change without a reload; find the failed task,
// press *retry* and watch it succeed (before that, hold and free `day_close`, and see that a
// force start without a reason is not sent); see the forecast in the header, on the nodes and
// in the timeline (actual bars once the day is done, deadline marks, at-risk markers equal to
// GET …/forecast); then check that what the page shows equals GET /api/days/current at the
// same seq.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const URL_WITH_TOKEN = process.env.TASKFLOW_URL;
const API = (process.env.TASKFLOW_API || (URL_WITH_TOKEN ? new URL(URL_WITH_TOKEN).origin : '')).replace(/\/$/, '');
const FAILED_TASK = process.env.TASKFLOW_FAILED_TASK || '';
const SCREENSHOT = process.env.TASKFLOW_SCREENSHOT || '';
const EXECUTABLE = process.env.TASKFLOW_CHROMIUM || '/usr/bin/chromium';
const WAIT = 60_000;       // every wait is bounded
const EXPECTED_TASKS = 17; // examples/fund-clearing/flow.toml

let context, page, userDataDir;
const consoleErrors = [];

before(async () => {
  assert.ok(URL_WITH_TOKEN, 'TASKFLOW_URL must be set (the console URL with ?token=)');
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskflow-chromium-'));
  // A fresh profile per run (playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: EXECUTABLE,
    headless: true,
    timeout: WAIT,
    viewport: { width: 1600, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context.setDefaultTimeout(WAIT);
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
});

after(async () => {
  if (page && SCREENSHOT) {
    try { await page.screenshot({ path: SCREENSHOT, fullPage: true }); } catch (e) { console.error('screenshot failed:', e.message); }
  }
  await context?.close();
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
});

async function getJson(p) {
  const res = await fetch(`${API}${p}`, { signal: AbortSignal.timeout(WAIT) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${p} → ${res.status} ${text}`);
  return JSON.parse(text);
}

const node = (id) => page.locator(`[data-testid=task-node][data-task-id="${id}"]`);
const status = (id) => node(id).getAttribute('data-status');

/** Waits until the task's node shows one of `statuses` (without reloading). */
async function waitStatus(id, statuses, timeout = WAIT) {
  await page.waitForFunction(([sel, wanted]) => wanted.includes(document.querySelector(sel)?.dataset.status),
    [`[data-testid=task-node][data-task-id="${id}"]`, statuses], { timeout, polling: 100 });
}

/** Opens the task's detail panel, presses `action` there, fills a reason and confirms. */
async function pressTaskAction(id, action, reason) {
  await node(id).click();
  const detail = page.locator(`#detail[data-task-id="${id}"]`);
  await detail.waitFor({ state: 'visible' });
  const button = detail.locator(`[data-testid=task-actions] button[data-action="${action}"]`);
  await page.waitForFunction((sel) => { const b = document.querySelector(sel); return b && !b.disabled; },
    `#detail[data-task-id="${id}"] [data-testid=task-actions] button[data-action="${action}"]`, { timeout: WAIT, polling: 100 });
  await button.click();
  const dialog = page.locator('[data-testid=action-dialog]');
  await dialog.waitFor({ state: 'visible' });
  await dialog.locator('[data-testid=action-reason]').fill(reason);
  await dialog.locator('[data-testid=action-confirm]').click();
  // The dialog closes once the server accepted the action (200); a 4xx keeps it open with the message.
  await page.waitForFunction(() => {
    const d = document.querySelector('[data-testid=action-dialog]');
    const err = document.querySelector('[data-testid=action-error]');
    return !d.open || (err && !err.hidden);
  }, null, { timeout: WAIT, polling: 100 });
  const error = await page.locator('[data-testid=action-error]').evaluate((e) => (e.hidden ? '' : e.textContent));
  assert.equal(error, '', `${action} ${id} was refused: ${error}`);
}

/** What the page shows, read in one go so that it is consistent with the data-seq read with it. */
function readPage() {
  return page.evaluate(() => {
    const boardEl = document.querySelector('[data-testid=board]');
    const tasks = {};
    for (const g of document.querySelectorAll('[data-testid=task-node]')) {
      const shards = {};
      for (const [k, v] of Object.entries(g.dataset)) {
        if (k.startsWith('shard') && k !== 'shardTotal') {
          const st = k.slice(5).replace(/[A-Z]/g, (c, i) => (i ? '_' : '') + c.toLowerCase());
          shards[st] = Number(v);
        }
      }
      tasks[g.dataset.taskId] = { status: g.dataset.status, total: Number(g.dataset.shardTotal), shards,
        statusText: g.querySelector('[data-testid=task-status]')?.textContent ?? '' };
    }
    return { seq: Number(boardEl.dataset.seq), date: boardEl.dataset.date, live: boardEl.dataset.live, tasks };
  });
}

test('the console shows the live board and drives the day', { timeout: 6 * WAIT }, async (t) => {
  await t.test('opens, strips the token from the address bar and shows the 17-task graph', async () => {
    await page.goto(URL_WITH_TOKEN, { waitUntil: 'domcontentloaded', timeout: WAIT });
    await page.locator('[data-testid=connection][data-connection=connected]').waitFor({ timeout: WAIT });
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=task-node]').length === n,
      EXPECTED_TASKS, { timeout: WAIT, polling: 100 });
    assert.equal(new URL(page.url()).searchParams.get('token'), null, 'the token is still in the address bar');
    assert.equal(await page.locator('[data-testid=graph] path.edge').count() > 0, true, 'the graph has no edges');
    // Marks this document: if the page reloads, the marker is gone.
    await page.evaluate(() => { window.__taskflowNoReload = true; });
  });

  await t.test('hold and free a task before it registers; force start needs a reason', async () => {
    await pressTaskAction('day_close', 'hold', 'browser test: keep the day open');
    await page.waitForFunction(() => document.querySelector('[data-testid=task-node][data-task-id="day_close"]')?.dataset.heldBy,
      null, { timeout: WAIT, polling: 100 });
    assert.match(await node('day_close').locator('[data-testid=task-status]').textContent(), /^HELD · /);
    const held = (await getJson('/api/days/current')).tasks.find((t) => t.id === 'day_close');
    assert.ok(held.held_by, `the API does not show the hold: ${JSON.stringify(held)}`);
    assert.ok(held.allowed_actions.includes('free') && !held.allowed_actions.includes('hold'), held.allowed_actions.join());
    assert.deepEqual(held.waiting_for, { kind: 'held', by: held.held_by });
    await page.waitForFunction(() => document.querySelector('[data-testid=task-node][data-task-id="day_close"]')?.dataset.waiting === 'held',
      null, { timeout: WAIT, polling: 100 });

    // Force start without a reason: the console says why and sends nothing.
    await node('reconciliation').click();
    // Why it waits: its first dependency not done, in words.
    await page.locator('#detail[data-task-id="reconciliation"] dd[data-field="waiting for"]', { hasText: /^waits for \w+/ })
      .waitFor({ timeout: WAIT });
    const sel = '#detail[data-task-id="reconciliation"] [data-testid=task-actions] button[data-action="force_start"]';
    await page.waitForFunction((q) => { const b = document.querySelector(q); return b && !b.disabled; }, sel, { timeout: WAIT, polling: 100 });
    await page.locator(sel).click();
    const dialog = page.locator('[data-testid=action-dialog]');
    await dialog.waitFor({ state: 'visible' });
    await dialog.locator('[data-testid=action-confirm]').click();
    await page.locator('[data-testid=action-error]', { hasText: 'needs a reason' }).waitFor({ timeout: WAIT });
    await dialog.locator('[data-testid=action-cancel]').click();
    await dialog.waitFor({ state: 'hidden' });
    const recon = (await getJson('/api/days/current')).tasks.find((t) => t.id === 'reconciliation');
    assert.equal(recon.forced, false, 'a force start without a reason was sent');

    await pressTaskAction('day_close', 'free', 'browser test: release it');
    await page.waitForFunction(() => !document.querySelector('[data-testid=task-node][data-task-id="day_close"]')?.dataset.heldBy,
      null, { timeout: WAIT, polling: 100 });
    assert.doesNotMatch(await node('day_close').locator('[data-testid=task-status]').textContent(), /HELD/);
  });

  await t.test('execute on the manual task day_init changes its status without a reload', async () => {
    const before = await status('day_init');
    assert.ok(['registered', 'pending'].includes(before), `day_init starts ${before}`);
    await pressTaskAction('day_init', 'execute', 'browser test: open the day');
    await waitStatus('day_init', ['running', 'succeeded']);
    await waitStatus('day_init', ['succeeded']);
    assert.equal(await page.evaluate(() => window.__taskflowNoReload), true, 'the page reloaded');
  });

  await t.test('the header and the timeline show the forecast while the day runs', async () => {
    await page.locator('[data-testid=day-forecast]', { hasText: /(predicted end|ended) \d\d:\d\d/ }).waitFor({ timeout: WAIT });
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=gantt-row]').length === n,
      EXPECTED_TASKS, { timeout: WAIT, polling: 100 });
    // day_init ran: an actual bar; the export's deadline is marked on its row.
    await page.locator('[data-testid=gantt-row][data-task-id="day_init"][data-kind=actual]').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('[data-testid=gantt-row][data-task-id="export_confirmations"] line.g-deadline').count(), 1);
    // The failed task waits for an operator's retry: the forecast says it never ends, so the
    // day's end is unknown and its rows after it have no bar — shown as such, not guessed.
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-running.png'), fullPage: true });
  });

  let failed = FAILED_TASK;
  await t.test('a failed task is retried from the console and succeeds', async () => {
    if (failed) {
      await waitStatus(failed, ['failed']);
    } else {
      const handle = await page.waitForFunction(
        () => document.querySelector('[data-testid=task-node][data-status=failed]')?.dataset.taskId,
        null, { timeout: WAIT, polling: 100 });
      failed = await handle.jsonValue();
    }
    assert.match(await node(failed).locator('[data-testid=task-status]').textContent(), /FAILED/);
    // The failed shard is listed, with its error.
    await page.locator(`[data-testid=task-node][data-task-id="${failed}"]`).click();
    await page.locator(`#detail[data-task-id="${failed}"] [data-testid=shard-row][data-status=failed]`).first().waitFor();
    await pressTaskAction(failed, 'retry', 'browser test: retry after the injected failure');
    await waitStatus(failed, ['succeeded']);
    assert.equal(await page.evaluate(() => window.__taskflowNoReload), true, 'the page reloaded');
    // The action is in the audit panel, live.
    await page.locator('[data-testid=audit-entry]', { hasText: failed }).first().waitFor();
  });

  await t.test('once the day is done the timeline shows what happened and the at-risk markers equal the API', async () => {
    // Every bar is what happened, and the page's at-risk markers are the API's: the export
    // ends after its 23:00 deadline (the test clock starts at 23:00).
    await waitStatus('day_close', ['succeeded']);
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=gantt-row]')].every((r) => r.dataset.kind === 'actual'),
      null, { timeout: WAIT, polling: 100 });
    const f = await getJson('/api/days/current/forecast');
    assert.equal(f.tasks.find((x) => x.id === 'export_confirmations').at_risk, true, JSON.stringify(f));
    for (const row of f.tasks) {
      assert.equal(await node(row.id).getAttribute('data-at-risk'), String(row.at_risk), `${row.id}: node at-risk`);
      const g = page.locator(`[data-testid=gantt-row][data-task-id="${row.id}"]`);
      assert.equal(await g.getAttribute('data-at-risk'), String(row.at_risk), `${row.id}: timeline at-risk`);
    }
    assert.match(await node('export_confirmations').locator('[data-testid=at-risk]').textContent(), /at risk/);
  });

  await t.test('what the page shows equals GET /api/days/current at the same seq', async () => {
    const deadline = Date.now() + WAIT;
    let shown, api;
    for (;;) {
      api = await getJson('/api/days/current');
      // The page may be behind the API (frames in flight) or ahead (the run moved on): wait for
      // it to reach the API's seq, read it, and try again if it moved past.
      await page.waitForFunction((seq) => Number(document.querySelector('[data-testid=board]').dataset.seq) >= seq,
        api.seq, { timeout: Math.max(1, deadline - Date.now()), polling: 50 });
      shown = await readPage();
      if (shown.seq === api.seq) break;
      assert.ok(Date.now() < deadline, `the page's seq never matched the API's (page ${shown.seq}, api ${api.seq})`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(shown.live, 'true');
    assert.equal(shown.date, api.date);
    assert.deepEqual(Object.keys(shown.tasks).sort(), api.tasks.map((t) => t.id).sort());
    for (const row of api.tasks) {
      const s = shown.tasks[row.id];
      assert.equal(s.status, row.status, `${row.id}: page shows ${s.status}, API says ${row.status} (seq ${api.seq})`);
      assert.equal(s.statusText, row.status.replaceAll('_', ' ').toUpperCase(), `${row.id}: status text`);
      assert.equal(s.total, row.shards.total, `${row.id}: shard total`);
      for (const [k, v] of Object.entries(row.shards)) {
        if (k === 'total') continue;
        assert.equal(s.shards[k], v, `${row.id}: ${k} shards: page ${s.shards[k]}, API ${v} (seq ${api.seq})`);
      }
    }
  });

  await t.test('no script errors', () => {
    assert.deepEqual(consoleErrors.filter((e) => !/favicon/.test(e)), []);
  });
});
