// What the browser tests share: launching Debian's headless Chromium, opening the chat page as a
// person, and reading and driving the page (waits, nicknames, messages). Used by chat.test.mjs and
// by tests/proxies/proxies.test.mjs.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

// Every wait is bounded so that a broken page fails in seconds rather than hanging the run.
export const WAIT_MS = 10_000;

/** Launches /usr/bin/chromium headless with `extraArgs` (a proxy, say). `close()` also removes
 * its scratch directory. */
export async function launchChromium(extraArgs = []) {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'wschat-chromium-'));
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    // Playwright refuses --user-data-dir in `args` for launch() (it wants launchPersistentContext,
    // which gives a single context); it makes its own fresh temporary profile instead, and the
    // directory below holds Chromium's other scratch files (crash dumps, disk cache).
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Fewer requests of Chromium's own to Google's hosts (which fail here, no network): they
      // would go through a proxy under test too.
      '--no-pings',
      '--disable-domain-reliability',
      '--disable-features=AutofillServerCommunication,OptimizationHints,MediaRouter',
      `--disk-cache-dir=${path.join(profile, 'cache')}`,
      `--crash-dumps-dir=${path.join(profile, 'crashes')}`,
      ...extraArgs,
    ],
    timeout: 30_000,
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  return browser;
}

/** Opens the chat at `url` in a fresh browser context of `browser` and records dialogs, page
 * errors, CSP reports and the WebSocket messages the page sends and receives (as the page sees
 * them: inflated). In the page, `__mostCopies` counts the most copies of each message text that
 * were ever on screen at once: a message shown twice, even for a moment, is caught. `out`: where a
 * failed wait leaves its screenshot. `setup(context)` runs before the page opens (routes, say).
 * `connecting(person)` runs once the page is loaded, before it is online (typing, say).
 * `statusWait`: how long the page may take to be online. */
export async function openChat(browser, name, url, { out, setup, connecting, statusWait = WAIT_MS } = {}) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 }, locale: 'en-GB' });
  // Injected by the browser itself, so the page's CSP does not apply.
  await context.addInitScript(() => {
    window.__mostCopies = {};
    document.addEventListener('DOMContentLoaded', () => {
      const list = document.querySelector('#messages');
      if (!list) return; // Not the chat: about:blank, or the browser's error page.
      new MutationObserver(() => {
        const copies = {};
        for (const p of list.querySelectorAll('li.msg .text')) copies[p.textContent] = (copies[p.textContent] ?? 0) + 1;
        for (const [text, n] of Object.entries(copies)) window.__mostCopies[text] = Math.max(window.__mostCopies[text] ?? 0, n);
      }).observe(list, { childList: true });
    });
  });
  if (setup) await setup(context);
  const page = await context.newPage();
  const person = { name, context, page, out, dialogs: [], errors: [], sockets: [], sent: [], received: [] };
  page.on('websocket', (ws) => {
    person.sockets.push(ws);
    ws.on('framesent', ({ payload }) => person.sent.push(payload));
    ws.on('framereceived', ({ payload }) => person.received.push(payload));
  });
  page.on('dialog', (dialog) => {
    person.dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => person.errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // Failed reconnect attempts are logged as console errors too; only CSP reports count.
    if (/content.security.policy/i.test(message.text())) person.errors.push(message.text());
  });
  await page.goto(url);
  if (connecting) await connecting(person);
  await waitStatus(person, 'online', statusWait);
  return person;
}

/** Waits for `predicate(arg)` to hold in the page; names `what` on timeout. */
export async function waitUntil(person, what, predicate, arg, timeout = WAIT_MS) {
  try {
    await person.page.waitForFunction(predicate, arg, { timeout });
  } catch (error) {
    const shot = person.out ? path.join(person.out, `failure-${person.name}.png`) : null;
    if (shot) await person.page.screenshot({ path: shot }).catch(() => {});
    throw new Error(`${person.name}: timed out waiting for ${what}${shot ? ` (screenshot: ${shot})` : ''}`, { cause: error });
  }
}

export const waitStatus = (person, state, timeout = WAIT_MS) =>
  waitUntil(person, `status ${state}`, (want) => document.querySelector('#status').dataset.state === want, state, timeout);

/** The status bar: its state, the transport it names (`data-transport`) and its text. */
export const status = (person) =>
  person.page.$eval('#status', (bar) => ({ state: bar.dataset.state, transport: bar.dataset.transport, text: bar.textContent }));

/** Waits until the online list is exactly `names`, with `me` marked as ourselves. */
export const waitOnline = (person, names, me) =>
  waitUntil(
    person,
    `online list ${names.join(', ')} with ${me} as me`,
    ({ names, me }) => {
      const items = [...document.querySelectorAll('#online li')];
      const shown = items.map((li) => li.firstChild.textContent);
      const mine = items.filter((li) => li.classList.contains('me')).map((li) => li.firstChild.textContent);
      return JSON.stringify(shown) === JSON.stringify(names) && mine.length === 1 && mine[0] === me;
    },
    { names, me },
  );

/** Waits for a message with exactly this nickname and text; `mine` also requires it to be acked. */
export const waitMessage = (person, { nick, text, mine = false }) =>
  waitUntil(
    person,
    `${mine ? 'own acked' : 'incoming'} message ${JSON.stringify(text)} from ${nick}`,
    ({ nick, text, mine }) =>
      [...document.querySelectorAll('#messages li.msg')].some(
        (li) =>
          li.querySelector('.nick').textContent === nick &&
          li.querySelector('.text').textContent === text &&
          li.classList.contains('mine') === mine &&
          (!mine || li.classList.contains('sent')),
      ),
    { nick, text, mine },
  );

export async function setNickname(person, nick) {
  await person.page.fill('#nick', nick);
  await person.page.click('#nick-form button');
}

export async function joinRoom(person, room) {
  await person.page.fill('#room', room);
  await person.page.click('#room-form button');
  await waitUntil(person, `room ${room}`, (room) => document.querySelector('#room-name').textContent === room, room);
}

export async function say(person, text) {
  await person.page.fill('#text', text);
  await person.page.click('#send-form button');
}

/** Sends `text` from one person and waits until the sender sees it acked and the other sees it. */
export async function exchange(from, to, text) {
  await say(from, text);
  await waitMessage(from, { nick: from.name, text, mine: true });
  await waitMessage(to, { nick: from.name, text });
}

/** The messages on a page, top to bottom: id (null while pending), nickname, text, classes. */
export const shown = (person) =>
  person.page.$$eval('#messages li.msg', (items) =>
    items.map((li) => ({
      id: li.dataset.id === undefined ? null : Number(li.dataset.id),
      nick: li.querySelector('.nick').textContent,
      text: li.querySelector('.text').textContent,
      pending: li.classList.contains('pending'),
      state: li.querySelector('.state')?.textContent ?? null,
    })),
  );

/** Every message on the page is stored, shown once, in the order the server accepted them. */
export async function assertInServerOrder(person) {
  const messages = await shown(person);
  const ids = messages.map((m) => m.id);
  assert.ok(ids.every(Number.isInteger), `${person.name}: nothing pending: ${JSON.stringify(messages.filter((m) => m.id === null))}`);
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i - 1] < ids[i], `${person.name}: ids ${ids[i - 1]} then ${ids[i]}: out of order or shown twice`);
  }
  return messages;
}

/** How many times each of `texts` is on the page. */
export async function countTexts(person, texts) {
  const messages = await shown(person);
  return texts.map((text) => messages.filter((m) => m.text === text).length);
}

/** Each of `texts` is on the page once, and was never on it twice, even for a moment. */
export async function assertOnce(person, texts) {
  assert.deepEqual(await countTexts(person, texts), texts.map(() => 1), `${person.name}: each exactly once`);
  const most = await person.page.evaluate((texts) => texts.map((text) => window.__mostCopies[text]), texts);
  assert.deepEqual(most, texts.map(() => 1), `${person.name}: never shown twice`);
}

/**
 * Runs the subtests of `t` as steps that build on each other: after a failure the rest are skipped
 * rather than pile up timeouts. Each passed step is logged with `log`.
 */
export function stepsOf(t, log) {
  let failed = false;
  return async (name, body) => {
    await t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
      try {
        await body();
      } catch (error) {
        failed = true;
        throw error;
      }
      log(`ok: ${name}`);
    });
  };
}
