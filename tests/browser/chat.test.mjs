// Browser test of the chat page: two people in two browser contexts of Debian's headless Chromium,
// driven by playwright-core. Run through ./run.sh, which builds and starts the server and passes:
//   WSCHAT_BIN      the server binary (the test restarts it)
//   WSCHAT_ADDR     host:port it listens on
//   WSCHAT_PIDFILE  holds the running server's pid; the test rewrites it on restart so that
//                   run.sh's cleanup stops whichever server is running
//   WSCHAT_LOG      server log with the wire trace (--trace), appended to by the restarted server
//   WSCHAT_OUT      where screenshots go (target/browser)
//   WSCHAT_TLS_CERT, WSCHAT_TLS_KEY  (optional) the server serves https:// and wss:// with these;
//                   Chromium is told to accept the test certificate (--ignore-certificate-errors)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests/browser/run.sh`);
  return value;
};
const BIN = env('WSCHAT_BIN');
const ADDR = env('WSCHAT_ADDR');
const PIDFILE = env('WSCHAT_PIDFILE');
const LOG = env('WSCHAT_LOG');
const OUT = env('WSCHAT_OUT');
// The message store, kept across the test's restart of the server.
const DB = env('WSCHAT_DB');
const TLS = process.env.WSCHAT_TLS_CERT && process.env.WSCHAT_TLS_KEY
  ? ['--tls-cert', process.env.WSCHAT_TLS_CERT, '--tls-key', process.env.WSCHAT_TLS_KEY]
  : [];
const URL = `${TLS.length ? 'https' : 'http'}://${ADDR}/`;
// The page picks the WebSocket's scheme from its own: wss: when it was loaded over https:.
const WS_SCHEME = TLS.length ? 'wss:' : 'ws:';
const [HOST, PORT] = [ADDR.slice(0, ADDR.lastIndexOf(':')), Number(ADDR.slice(ADDR.lastIndexOf(':') + 1))];

// Every wait is bounded so that a broken page fails in seconds rather than hanging the run.
const WAIT_MS = 10_000;
const XSS = '<img src=x onerror=alert(1)>';
// The server compresses messages from this many bytes on (its default --deflate-threshold).
const DEFLATE_THRESHOLD = 256;
// The server runs with --trace so that the test can see the wire (see the permessage-deflate step).
const SERVER_ARGS = ['--listen', ADDR, '--trace', '--db', DB, ...TLS];

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

let browser;
let profile;
const people = {};

before(async () => {
  profile = mkdtempSync(path.join(os.tmpdir(), 'wschat-chromium-'));
  browser = await chromium.launch({
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
      `--disk-cache-dir=${path.join(profile, 'cache')}`,
      `--crash-dumps-dir=${path.join(profile, 'crashes')}`,
      // The test CA is made for this run; the rest of TLS is checked as usual.
      ...(TLS.length ? ['--ignore-certificate-errors'] : []),
    ],
    timeout: 30_000,
  });
  log(`chromium ${browser.version()}`);
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Opens the chat in a fresh browser context and records dialogs, page errors, CSP reports and
 * the WebSocket messages the page sends and receives (as the page sees them: inflated). */
async function openChat(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 }, locale: 'en-GB' });
  const page = await context.newPage();
  const person = { name, context, page, dialogs: [], errors: [], sent: [], received: [], sockets: [] };
  page.on('websocket', (ws) => {
    person.sockets.push(ws.url());
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
  await page.goto(URL);
  await waitStatus(person, 'online');
  for (const url of person.sockets) assert.equal(new globalThis.URL(url).protocol, WS_SCHEME, url);
  people[name] = person;
  return person;
}

/** Waits for `predicate(arg)` to hold in the page; names `what` on timeout. */
async function waitUntil(person, what, predicate, arg) {
  try {
    await person.page.waitForFunction(predicate, arg, { timeout: WAIT_MS });
  } catch (error) {
    const shot = path.join(OUT, `failure-${person.name}.png`);
    await person.page.screenshot({ path: shot }).catch(() => {});
    throw new Error(`${person.name}: timed out waiting for ${what} (screenshot: ${shot})`, { cause: error });
  }
}

const waitStatus = (person, state) =>
  waitUntil(person, `status ${state}`, (want) => document.querySelector('#status').dataset.state === want, state);

/** Waits until the online list is exactly `names`, with `me` marked as ourselves. */
const waitOnline = (person, names, me) =>
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
const waitMessage = (person, { nick, text, mine = false }) =>
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

async function setNickname(person, nick) {
  await person.page.fill('#nick', nick);
  await person.page.click('#nick-form button');
}

async function joinRoom(person, room) {
  await person.page.fill('#room', room);
  await person.page.click('#room-form button');
  await waitUntil(person, `room ${room}`, (room) => document.querySelector('#room-name').textContent === room, room);
}

async function say(person, text) {
  await person.page.fill('#text', text);
  await person.page.click('#send-form button');
}

/** Sends `text` from one person and waits until the sender sees it acked and the other sees it. */
async function exchange(from, to, text) {
  await say(from, text);
  await waitMessage(from, { nick: from.name, text, mine: true });
  await waitMessage(to, { nick: from.name, text });
}

// ---- the server, for the restart ----

function portOpen() {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port: PORT });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function waitPort(open) {
  for (let i = 0; i < 100; i++) {
    if ((await portOpen()) === open) return;
    await sleep(100);
  }
  throw new Error(`port ${PORT} still ${open ? 'closed' : 'open'} after 10 s`);
}

async function killServer() {
  const pid = Number(readFileSync(PIDFILE, 'utf8'));
  // SIGKILL: a crash, not a polite shutdown; the pages get no Close frame.
  process.kill(pid, 'SIGKILL');
  await waitPort(false);
}

async function startServer() {
  const out = openSync(LOG, 'a');
  const child = spawn(BIN, SERVER_ARGS, { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  writeFileSync(PIDFILE, `${child.pid}\n`);
  await waitPort(true);
}

// ---- the server's wire trace ----

/** The wire trace in the server log (--trace; src/trace.rs), by connection id: its HTTP head lines
 * and its frames, `<-` from the browser and `->` from the server. A compressed message's frame has
 * RSV1 (RSV=100) and shows the length it inflated to; `len` below is that length. Ids restart with
 * the server, so this is only meaningful before the restart. */
function wireTrace() {
  const frame =
    /^#(\d+) (<-|->) (?:FIN|\.\.\.) RSV=([01]{3}) ([A-Z]+) +MASK=\S+ +len=(\d+) +\(\d+-bit\) +(?:compressed, inflated len=(\d+) )?(.*)$/;
  const head = /^#(\d+) (<-|->) (.*)$/;
  const connections = new Map();
  const conn = (id) => connections.get(id) ?? connections.set(id, { id, heads: [], frames: [] }).get(id);
  for (const line of readFileSync(LOG, 'utf8').split('\n')) {
    let m = frame.exec(line);
    if (m) {
      const [, id, dir, rsv, opcode, wireLen, inflated, preview] = m;
      const len = Number(inflated ?? wireLen);
      conn(id).frames.push({ dir, compressed: rsv === '100', opcode, wireLen: Number(wireLen), len, preview });
    } else if ((m = head.exec(line))) {
      conn(m[1]).heads.push(`${m[2]} ${m[3]}`);
    }
  }
  return connections;
}

/** Text as a trace preview shows it (src/trace.rs `quote`), for the short ASCII texts we look for. */
const quoted = (text) => `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
const isData = (frame) => frame.opcode === 'TEXT' || frame.opcode === 'BINARY';

// ---- the test ----

test('two people chat in headless Chromium, through a server restart', { timeout: 90_000 }, async (t) => {
  // Steps build on each other: after a failure, skip the rest rather than pile up timeouts.
  let failed = false;
  const step = async (name, body) => {
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

  await step('alice and bob open the page and pick nicknames', async () => {
    const alice = await openChat('alice');
    const bob = await openChat('bob');
    await setNickname(alice, 'alice');
    await waitUntil(alice, 'own nickname alice', () => document.querySelector('#online li.me')?.firstChild.textContent === 'alice');
    // Nicknames are unique regardless of case: the page shows the server's refusal.
    await setNickname(bob, 'ALICE');
    await waitUntil(bob, 'nickname_taken error', () => /taken/i.test(document.querySelector('#nick-error').textContent));
    await setNickname(bob, 'bob');
    await waitOnline(bob, ['alice', 'bob'], 'bob');
    await waitOnline(alice, ['alice', 'bob'], 'alice');
    assert.equal(await bob.page.textContent('#nick-error'), '');
  });

  await step('both move to the room rust and see each other there', async () => {
    const { alice, bob } = people;
    await joinRoom(alice, 'rust');
    await waitOnline(alice, ['alice'], 'alice');
    await waitOnline(bob, ['bob'], 'bob');
    await joinRoom(bob, 'rust');
    await waitOnline(alice, ['alice', 'bob'], 'alice');
    await waitOnline(bob, ['alice', 'bob'], 'bob');
  });

  await step('messages go both ways, with nickname and time; own ones are acked', async () => {
    const { alice, bob } = people;
    await exchange(alice, bob, 'Hi bob! Fancy a WebSocket written from scratch?');
    await exchange(bob, alice, 'Hello alice. Only if the frames are masked properly.');
    const times = await alice.page.$$eval('#messages li.msg time', (nodes) => nodes.map((n) => n.textContent));
    assert.equal(times.length, 2);
    for (const time of times) assert.match(time, /^\d{1,2}:\d{2}/);
  });

  await step('the WebSocket uses permessage-deflate, and compressed frames flow both ways', async () => {
    const { alice, bob } = people;
    // Over the server's threshold, so that it compresses them too (the browser compresses anyway).
    const long = (name) => `${name} writes a long line: ${'κόσμε, permessage-deflate! '.repeat(12)}`;
    await exchange(alice, bob, long('alice'));
    await exchange(bob, alice, long('bob'));
    const sockets = [...wireTrace().values()].filter((c) => c.heads.some((h) => h.startsWith('-> HTTP/1.1 101 ')));
    assert.equal(sockets.length, 2, 'one WebSocket per page');
    for (const [person, other] of [[alice, bob], [bob, alice]]) {
      // The page's connection: the one on which it chose its nickname.
      const nickname = quoted(JSON.stringify({ type: 'nickname', payload: person.name }));
      const socket = sockets.find((c) => c.frames.some((f) => f.dir === '<-' && f.preview === nickname));
      assert.ok(socket, `${person.name}: a connection that chose the nickname`);
      const who = `${person.name} (#${socket.id})`;
      assert.ok(socket.heads.some((h) => /^<- Sec-WebSocket-Extensions: .*permessage-deflate/i.test(h)), `${who}: offered`);
      const answer = socket.heads.find((h) => h.startsWith('-> Sec-WebSocket-Extensions: '));
      assert.match(answer ?? '(none)', /^-> Sec-WebSocket-Extensions: permessage-deflate\b/, `${who}: the 101 accepts`);

      // Browser to server: its long message arrived compressed and inflated to what it sent.
      const request = JSON.stringify({ type: 'message', payload: long(person.name) });
      assert.ok(person.sent.includes(request), `${who}: the page sent its long message`);
      const up = socket.frames.filter((f) => f.dir === '<-' && isData(f));
      const mine = up.find((f) => f.len === Buffer.byteLength(request) && f.preview.startsWith(quoted('{"type":"message"').slice(0, -1)));
      assert.ok(mine?.compressed, `${who}: its long message came with RSV1 (${JSON.stringify(mine)})`);

      // Server to browser: the other's long message went out compressed, and inflates to exactly
      // the event the page received; every server message is compressed iff over the threshold.
      const event = person.received.find((p) => typeof p === 'string' && JSON.parse(p).payload?.text === long(other.name));
      assert.ok(event, `${who}: the page received ${other.name}'s long message`);
      const down = socket.frames.filter((f) => f.dir === '->' && isData(f));
      const theirs = down.find((f) => f.len === Buffer.byteLength(event) && f.compressed);
      assert.ok(theirs, `${who}: ${other.name}'s long message went out with RSV1, inflating to ${Buffer.byteLength(event)} B`);
      for (const f of down) {
        assert.equal(f.compressed, f.len >= DEFLATE_THRESHOLD, `${who}: a ${f.len} B server message: ${f.preview}`);
      }
      const count = (frames) => `${frames.filter((f) => f.compressed).length} of ${frames.length}`;
      log(`${who}: ${answer.slice(3)}; compressed: ${count(up)} from the browser, ${count(down)} from the server`);
    }
  });

  await step('markup in a message is shown as text, never run', async () => {
    const { alice, bob } = people;
    await exchange(alice, bob, XSS);
    // Give a would-be <img> the time to load, fail and fire its onerror.
    await sleep(300);
    for (const person of [alice, bob]) {
      const texts = await person.page.$$eval('#messages .text', (nodes) => nodes.map((n) => n.textContent));
      assert.ok(texts.includes(XSS), `${person.name} shows the literal text`);
      assert.equal(await person.page.locator('img').count(), 0, `${person.name}: no img element`);
      assert.deepEqual(person.dialogs, [], `${person.name}: no dialog`);
    }
  });

  await step('after a server crash both pages reconnect and restore nickname and room', async () => {
    const { alice, bob } = people;
    log('killing the server');
    await killServer();
    await waitStatus(alice, 'reconnecting');
    await waitStatus(bob, 'reconnecting');
    await startServer();
    log('server restarted');
    await waitStatus(alice, 'online');
    await waitStatus(bob, 'online');
    for (const person of [alice, bob]) {
      await waitOnline(person, ['alice', 'bob'], person.name);
      assert.equal(await person.page.textContent('#room-name'), 'rust');
    }
  });

  await step('they chat again after the restart', async () => {
    const { alice, bob } = people;
    // The restarted server numbers messages from 1 again: these must not be taken for duplicates.
    await exchange(bob, alice, 'Back again: the server restarted.');
    await exchange(alice, bob, 'And we never had to reload the page.');
    await alice.page.screenshot({ path: path.join(OUT, 'chat.png') });
    await bob.page.screenshot({ path: path.join(OUT, 'chat-bob.png') });
  });

  await step('acks and errors stay matched to their messages under the rate limit', async () => {
    const { alice, bob } = people;
    // 30 messages at once exceed the burst of 20: some are refused with rate_limited, which names
    // no message. The page matches replies to requests by order; check it marked the right ones.
    await alice.page.evaluate(() => {
      const form = document.querySelector('#send-form');
      const input = document.querySelector('#text');
      for (let i = 0; i < 30; i++) {
        input.value = `burst ${i}`;
        form.requestSubmit();
      }
    });
    await waitUntil(alice, 'every burst message answered', () => !document.querySelector('#messages .pending'));
    const burst = (nodes) =>
      nodes
        .filter((li) => li.querySelector('.text').textContent.startsWith('burst '))
        .map((li) => ({ id: li.dataset.id, text: li.querySelector('.text').textContent, failed: li.classList.contains('failed') }));
    const sent = await alice.page.$$eval('#messages li.msg.mine', burst);
    const accepted = sent.filter((m) => !m.failed).map(({ id, text }) => ({ id, text }));
    assert.ok(accepted.length >= 15 && accepted.length < 30, `${accepted.length} of 30 accepted`);
    await waitUntil(
      bob,
      'the accepted burst',
      (n) => [...document.querySelectorAll('#messages .text')].filter((p) => p.textContent.startsWith('burst ')).length >= n,
      accepted.length,
    );
    const received = (await bob.page.$$eval('#messages li.msg', burst)).map(({ id, text }) => ({ id, text }));
    assert.deepEqual(received, accepted, 'bob got exactly the messages alice saw acked, with the same ids');
  });

  await step('no page errors, CSP violations or dialogs', async () => {
    for (const person of Object.values(people)) {
      assert.deepEqual(person.errors, [], `${person.name}: errors`);
      assert.deepEqual(person.dialogs, [], `${person.name}: dialogs`);
    }
  });
});
