// Browser test of the chat page: two people in two browser contexts of Debian's headless Chromium,
// driven by playwright-core. Run through ./run.sh, which builds and starts the server and passes:
//   WSCHAT_BIN      the server binary (the test restarts it)
//   WSCHAT_ADDR     host:port it listens on
//   WSCHAT_PIDFILE  holds the running server's pid; the test rewrites it on restart so that
//                   run.sh's cleanup stops whichever server is running
//   WSCHAT_LOG      server log with the wire trace (--trace), appended to by the restarted server
//   WSCHAT_OUT      where screenshots go (target/browser)
//   WSCHAT_DB       the message store (a file: restarts keep the history)
//   WSCHAT_HISTORY_SIZE  the server's --history-size: how many messages a welcome shows
//   WSCHAT_FLAGS    the server's other flags, space-separated (the test restarts it with them)
//   WSCHAT_TLS_CERT, WSCHAT_TLS_KEY  (optional) the server serves https:// and wss:// with these;
//                   Chromium is told to accept the test certificate (--ignore-certificate-errors)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  WAIT_MS,
  assertInServerOrder,
  assertOnce,
  exchange,
  joinRoom,
  launchChromium,
  openChat as open,
  say,
  setNickname,
  shown,
  stepsOf,
  waitMessage,
  waitOnline,
  waitStatus,
  waitUntil,
} from './pages.mjs';

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
// The message store, kept across the test's restarts of the server; the last step starts it on
// another (a new epoch).
const DB = env('WSCHAT_DB');
const OTHER_DB = DB.replace(/(\.db)?$/, '-other.db');
const HISTORY_SIZE = Number(env('WSCHAT_HISTORY_SIZE'));
const TLS = process.env.WSCHAT_TLS_CERT && process.env.WSCHAT_TLS_KEY
  ? ['--tls-cert', process.env.WSCHAT_TLS_CERT, '--tls-key', process.env.WSCHAT_TLS_KEY]
  : [];
const URL = `${TLS.length ? 'https' : 'http'}://${ADDR}/`;
// The page picks the WebSocket's scheme from its own: wss: when it was loaded over https:.
const WS_SCHEME = TLS.length ? 'wss:' : 'ws:';
const [HOST, PORT] = [ADDR.slice(0, ADDR.lastIndexOf(':')), Number(ADDR.slice(ADDR.lastIndexOf(':') + 1))];

const XSS = '<img src=x onerror=alert(1)>';
// The server compresses messages from this many bytes on (its default --deflate-threshold).
const DEFLATE_THRESHOLD = 256;
// The server runs with --trace so that the test can see the wire (see the permessage-deflate step),
// and with the other flags run.sh gave it.
const FLAGS = env('WSCHAT_FLAGS').split(' ');
const serverArgs = (db) => ['--listen', ADDR, '--db', db, ...FLAGS, ...TLS];

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

let browser;
let relay; // carol's network (see startRelay)
const people = {};

before(async () => {
  // The test CA is made for this run; the rest of TLS is checked as usual.
  browser = await launchChromium(TLS.length ? ['--ignore-certificate-errors'] : []);
  log(`chromium ${browser.version()}`);
});

after(async () => {
  relay?.close();
  await browser?.close();
});

/** Opens the chat (at `url`) as `name` in a fresh browser context (see pages.mjs). */
async function openChat(name, url = URL) {
  const person = await open(browser, name, url, { out: OUT });
  for (const ws of person.sockets) assert.equal(new globalThis.URL(ws.url()).protocol, WS_SCHEME, ws.url());
  people[name] = person;
  return person;
}

const notes = (person) => person.page.$$eval('#messages li.note', (items) => items.map((li) => li.textContent));
const stored = ({ id, nick, text }) => ({ id, nick, text });

/** The requests of `type` a page sent, as the page sent them. */
const sentRequests = (person, type) =>
  person.sent
    .filter((payload) => typeof payload === 'string')
    .map((payload) => JSON.parse(payload))
    .filter((request) => request.type === type);

/** The errors a page received. */
const receivedErrors = (person) =>
  person.received
    .filter((payload) => typeof payload === 'string')
    .map((payload) => JSON.parse(payload))
    .filter((event) => event.type === 'error')
    .map((event) => event.payload.code);

/** Polls `predicate` in the test (not the page) until it holds; names `what` on timeout. */
async function waitFor(what, predicate) {
  const deadline = Date.now() + WAIT_MS;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const sentMessages = (person) => sentRequests(person, 'message');

/** What the server holds for `room`, read by a connection of its own (a blank page speaking the
 * protocol: join the room, then page through `history` from the start). */
async function storedHistory(room) {
  const page = await browser.newPage();
  try {
    return await page.evaluate(
      async ({ url, room, timeout }) => {
        const ws = new WebSocket(url);
        const inbox = [];
        let wake = () => {};
        ws.onmessage = (event) => {
          inbox.push(JSON.parse(event.data));
          wake();
        };
        const deadline = Date.now() + timeout;
        const next = async (type) => {
          for (;;) {
            const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
            if (i >= 0) {
              const [m] = inbox.splice(i, 1);
              if (m.type === 'error') throw new Error(`probe: ${JSON.stringify(m.payload)}`);
              return m.payload;
            }
            if (Date.now() > deadline) throw new Error(`probe: no ${type}`);
            await new Promise((resolve) => {
              wake = resolve;
              setTimeout(resolve, 100);
            });
          }
        };
        await next('welcome');
        ws.send(JSON.stringify({ type: 'join', payload: room }));
        await next('welcome');
        const messages = [];
        for (let since = 0; ; ) {
          ws.send(JSON.stringify({ type: 'history', payload: { since, limit: 500 } }));
          const page = await next('history');
          messages.push(...page.messages);
          if (!page.more || !page.messages.length) break;
          since = page.messages.at(-1).id;
        }
        ws.close();
        return messages.map((m) => ({ id: m.id, nick: m.nickname, text: m.text }));
      },
      { url: `${WS_SCHEME}//${ADDR}/`, room, timeout: WAIT_MS },
    );
  } finally {
    await page.close();
  }
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

const serverPid = () => Number(readFileSync(PIDFILE, 'utf8'));

async function killServer() {
  // SIGKILL: a crash, not a polite shutdown; the pages get no Close frame.
  process.kill(serverPid(), 'SIGKILL');
  await waitPort(false);
}

/** SIGSTOP: the server holds still; its sockets still take bytes (the kernel buffers them). */
const freezeServer = () => process.kill(serverPid(), 'SIGSTOP');
const thawServer = () => process.kill(serverPid(), 'SIGCONT');

async function startServer(db = DB) {
  const out = openSync(LOG, 'a');
  const child = spawn(BIN, serverArgs(db), { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  writeFileSync(PIDFILE, `${child.pid}\n`);
  await waitPort(true);
}

/** A TCP relay in front of the server, for a page that must lose its network: `drop()` cuts the
 * page's side of every connection and leaves the server's side open, as a network that fails
 * without a word (the server notices nothing until its pings go unanswered). A dropped
 * connection's `closedWith` is the close code the server later sends on it, if any. */
const ENCRYPTED_CLOSE = 'a TLS record (the Close frame, encrypted)';

async function startRelay() {
  const links = new Set();
  const relay = net.createServer((client) => {
    const upstream = net.connect({ host: HOST, port: PORT });
    const link = { client, upstream, dropped: false, closedWith: null };
    links.add(link);
    client.pipe(upstream);
    upstream.pipe(client);
    for (const socket of [client, upstream]) socket.on('error', () => {});
    client.on('close', () => link.dropped || upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => relay.listen(0, HOST, resolve));
  return {
    url: `${new globalThis.URL(URL).protocol}//${HOST}:${relay.address().port}/`,
    drop() {
      const dropped = [...links].filter((link) => !link.dropped && !link.client.destroyed);
      for (const link of dropped) {
        link.dropped = true;
        link.client.unpipe(link.upstream);
        link.upstream.unpipe(link.client);
        link.client.destroy();
        // RFC 6455 §5.5.1: a server's Close frame is 0x88, an unmasked length, the code (2 bytes).
        // Over TLS the relay sees records, not frames: the first one after the drop (the Close,
        // encrypted) stands for it, and the plain run checks the code.
        let seen = Buffer.alloc(0);
        link.upstream.on('data', (chunk) => {
          if (TLS.length) {
            link.closedWith ??= ENCRYPTED_CLOSE;
            return;
          }
          seen = Buffer.concat([seen, chunk]);
          for (let i = seen.indexOf(0x88); i >= 0 && i + 3 < seen.length; i = seen.indexOf(0x88, i + 1)) {
            if (seen[i + 1] >= 2 && seen[i + 1] <= 125) link.closedWith ??= seen.readUInt16BE(i + 2);
          }
        });
        link.upstream.resume(); // unpipe() paused it
      }
      return dropped;
    },
    close() {
      for (const link of links) {
        link.client.destroy();
        link.upstream.destroy();
      }
      relay.close();
    },
  };
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

test('two people chat in headless Chromium, through server restarts', { timeout: 170_000 }, async (t) => {
  const step = stepsOf(t, log);

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
      const request = person.sent.find((p) => typeof p === 'string' && JSON.parse(p).payload?.text === long(person.name));
      assert.ok(request, `${who}: the page sent its long message`);
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

  await step('after a server crash both pages reconnect and restore nickname and room; same database: nothing said, nothing lost', async () => {
    const { alice, bob } = people;
    const before = {};
    for (const person of [alice, bob]) {
      before[person.name] = { messages: (await assertInServerOrder(person)).map(stored), notes: (await notes(person)).length };
    }
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
    // The welcome names the same epoch: the page goes on as if nothing happened. The only new
    // lines are people coming back.
    for (const person of [alice, bob]) {
      const { messages, notes: noted } = before[person.name];
      assert.deepEqual((await assertInServerOrder(person)).map(stored), messages, `${person.name}: the same messages`);
      const added = (await notes(person)).slice(noted);
      assert.ok(added.every((note) => /^\S+ (joined|left)$/.test(note)), `${person.name}: only presence lines: ${JSON.stringify(added)}`);
    }
    // And the server kept every one of them: a newcomer reads exactly what the pages show.
    assert.deepEqual(await storedHistory('rust'), before.alice.messages, 'the stored history of rust');
  });

  await step('they chat again after the restart', async () => {
    const { alice, bob } = people;
    // Ids go on increasing after a restart (same database): new messages are not duplicates.
    await exchange(bob, alice, 'Back again: the server restarted.');
    await exchange(alice, bob, 'And we never had to reload the page.');
    await alice.page.screenshot({ path: path.join(OUT, 'chat.png') });
    await bob.page.screenshot({ path: path.join(OUT, 'chat-bob.png') });
  });

  await step('typed while the server is down: pending, then delivered exactly once, in order', async () => {
    const { alice, bob } = people;
    await killServer();
    await waitStatus(alice, 'reconnecting');
    const texts = ['Typed while the server was down.', 'And a second one, still down.'];
    for (const text of texts) await say(alice, text);
    const pending = (await shown(alice)).filter((m) => m.pending);
    assert.deepEqual(
      pending.map(({ id, text, state }) => ({ id, text, state })),
      texts.map((text) => ({ id: null, text, state: 'waiting for the connection' })),
      'alice: both shown as pending',
    );
    await startServer();
    log('server back');
    for (const text of texts) {
      await waitMessage(alice, { nick: 'alice', text, mine: true });
      await waitMessage(bob, { nick: 'alice', text });
    }
    await waitUntil(alice, 'no pending message', () => !document.querySelector('#messages .pending'));
    // A message sent after them is shown after them: nothing more of theirs is on its way.
    await exchange(bob, alice, 'Got both.');
    const ids = {};
    for (const person of [alice, bob]) {
      const messages = await assertInServerOrder(person);
      await assertOnce(person, texts);
      ids[person.name] = texts.map((text) => messages.find((m) => m.text === text).id);
    }
    assert.deepEqual(ids.bob, ids.alice, 'the same ids on both pages');
    assert.ok(ids.alice[0] < ids.alice[1], 'in the order typed');
  });

  await step('a page reloaded with a message pending (server down) delivers it exactly once', async () => {
    const { alice, bob } = people;
    await killServer();
    await waitStatus(bob, 'reconnecting');
    const text = 'Typed while down, then the page was reloaded.';
    await say(bob, text);
    await waitUntil(bob, 'the pending message', (text) =>
      [...document.querySelectorAll('#messages li.pending .text')].some((p) => p.textContent === text), text);
    // The server is down, so the reload shows the browser's error page; the outbox is in
    // localStorage. Once the server is back, the user reloads again.
    await bob.page.reload({ timeout: WAIT_MS }).then(
      () => assert.fail('the reload should fail while the server is down'),
      () => {},
    );
    // Playwright reports the failure before Chromium commits its error page: wait for that, or
    // it would interrupt the next navigation.
    await bob.page.waitForURL((url) => url.protocol === 'chrome-error:', { timeout: WAIT_MS });
    await startServer();
    log('server back');
    await bob.page.goto(URL, { timeout: WAIT_MS });
    await waitStatus(bob, 'online');
    await waitMessage(bob, { nick: 'bob', text, mine: true });
    await waitMessage(alice, { nick: 'bob', text });
    // The reloaded page got its name and room back from sessionStorage.
    await waitOnline(bob, ['alice', 'bob'], 'bob');
    assert.equal(await bob.page.textContent('#room-name'), 'rust');
    await exchange(alice, bob, 'Welcome back, bob.');
    for (const person of [alice, bob]) {
      await assertInServerOrder(person);
      await assertOnce(person, [text]);
    }
  });

  await step('a message stored but never acked (the page left first) counts once after a reload', async () => {
    const { alice, bob } = people;
    const text = 'Sent as the server froze: stored, but the ack never came.';
    const [errors, nicknames] = [receivedErrors(bob).length, sentRequests(bob, 'nickname').length];
    // The frozen server takes the bytes (the kernel buffers them) but answers nothing.
    freezeServer();
    let key;
    try {
      await say(bob, text);
      await waitFor('bob sending the message', () => (key = sentMessages(bob).find((m) => m.payload.text === text)?.payload.key));
      assert.equal((await shown(bob)).find((m) => m.text === text)?.state, 'sending…');
      // Leave the page: its WebSocket closes. Then the server runs again: it stores the message,
      // shows it to alice, and acks a connection that is gone.
      await bob.page.goto('about:blank');
    } finally {
      thawServer();
    }
    await waitMessage(alice, { nick: 'bob', text });
    // Back to the chat: the outbox still holds the message, which may or may not have been stored.
    // The page resumes its session and sends it again under the same key; the server answers with
    // the original ack and stores nothing. The copy in the welcome's history is ours: shown once.
    await bob.page.goto(URL, { timeout: WAIT_MS });
    await waitStatus(bob, 'online');
    await waitMessage(bob, { nick: 'bob', text, mine: true });
    await waitUntil(bob, 'no pending message', () => !document.querySelector('#messages .pending'));
    const sends = sentMessages(bob).filter((m) => m.payload.key === key);
    assert.equal(sends.length, 2, 'sent twice under the same key');
    await waitOnline(bob, ['alice', 'bob'], 'bob');
    await exchange(alice, bob, 'Only once, good.');
    for (const person of [alice, bob]) {
      await assertInServerOrder(person);
      await assertOnce(person, [text]);
    }
    // The server never restarted: the session was resumed, the page never asked for its name again.
    assert.deepEqual(receivedErrors(bob).slice(errors), [], 'bob: no error (resume_failed, nickname_taken)');
    assert.equal(sentRequests(bob, 'nickname').length, nicknames, 'bob: no nickname request');
    const copies = (await storedHistory('rust')).filter((m) => m.text === text);
    assert.equal(copies.length, 1, 'stored once');
  });

  await step('a dropped network: the page resumes its session, name and room, without nickname_taken', async () => {
    // carol reaches the server through a relay that can lose the network.
    relay = await startRelay();
    const carol = await openChat('carol', relay.url);
    await setNickname(carol, 'carol');
    await waitUntil(carol, 'own nickname carol', () => document.querySelector('#online li.me')?.firstChild.textContent === 'carol');
    await joinRoom(carol, 'archive');
    // Messages for the next step, all at once (fewer than the rate limit's burst).
    const texts = Array.from({ length: 2 * HISTORY_SIZE + 2 }, (_, i) => `archive ${i + 1}`);
    carol.archive = texts;
    await carol.page.evaluate((texts) => {
      const form = document.querySelector('#send-form');
      const input = document.querySelector('#text');
      for (const text of texts) {
        input.value = text;
        form.requestSubmit();
      }
    }, texts);
    await waitUntil(carol, 'every message acked', (n) => document.querySelectorAll('#messages li.msg.sent').length === n, texts.length);
    const before = (await assertInServerOrder(carol)).map(stored);
    assert.deepEqual(before.map((m) => m.text), texts, 'in the order typed');

    const dropped = relay.drop();
    await waitStatus(carol, 'reconnecting');
    await waitStatus(carol, 'online');
    // The server still held the old connection open: the resume took it over and closed it.
    await waitFor('the server closing the old connection', () => dropped.some((link) => link.closedWith !== null));
    const closedWith = dropped.map((link) => link.closedWith).filter((code) => code !== null);
    assert.deepEqual(closedWith, [TLS.length ? ENCRYPTED_CLOSE : 4001]);
    await waitOnline(carol, ['carol'], 'carol');
    assert.equal(await carol.page.textContent('#room-name'), 'archive');
    assert.equal(sentRequests(carol, 'resume').length, 1, 'one resume');
    assert.equal(sentRequests(carol, 'nickname').length, 1, 'the nickname was never asked for again');
    assert.deepEqual(receivedErrors(carol), [], 'no error (no nickname_taken)');
    assert.deepEqual((await assertInServerOrder(carol)).map(stored), before, 'the same messages');
    await assertOnce(carol, texts);
  });

  await step('"Load older messages" pages back with `before`, and hides at the start of the room', async () => {
    const { carol } = people;
    const texts = carol.archive;
    // A fresh view: the reloaded page resumes its session (name and room) and shows what the
    // welcome carries, the newest HISTORY_SIZE messages.
    await carol.page.reload({ timeout: WAIT_MS });
    await waitStatus(carol, 'online');
    const showing = (want) =>
      waitUntil(
        carol,
        `messages ${want[0]} to ${want.at(-1)}`,
        (want) => JSON.stringify([...document.querySelectorAll('#messages li.msg .text')].map((p) => p.textContent)) === JSON.stringify(want),
        want,
      );
    await showing(texts.slice(-HISTORY_SIZE));
    assert.equal(await carol.page.textContent('#room-name'), 'archive');
    await waitOnline(carol, ['carol'], 'carol');
    const olderShown = () => carol.page.isVisible('#older');
    assert.ok(await olderShown(), 'the button is shown');
    let clicks = 0;
    for (let have = HISTORY_SIZE; have < texts.length; ) {
      await carol.page.click('#older');
      clicks += 1;
      have = Math.min(texts.length, have + HISTORY_SIZE);
      await showing(texts.slice(-have));
      if (have < texts.length) assert.ok(await olderShown(), `still shown with ${have} of ${texts.length}`);
    }
    await waitUntil(carol, 'the button hidden', () => document.querySelector('#older').hidden);
    assert.equal(clicks, Math.ceil((texts.length - HISTORY_SIZE) / HISTORY_SIZE));
    const befores = sentRequests(carol, 'history').filter((request) => 'before' in request.payload);
    assert.equal(befores.length, clicks, 'one `history` with `before` per click');
    await assertInServerOrder(carol);
    await assertOnce(carol, texts);
    assert.equal(sentRequests(carol, 'nickname').length, 1, 'the reload resumed the session too');
    assert.deepEqual(receivedErrors(carol), [], 'no error');
    assert.deepEqual(carol.errors, [], 'carol: errors');
    await carol.context.close();
    relay.close();
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

  await step('a server on another database: each page clears its view, with one line saying why', async () => {
    const { alice, bob } = people;
    await killServer();
    for (const suffix of ['', '-wal', '-shm']) rmSync(OTHER_DB + suffix, { force: true });
    await startServer(OTHER_DB);
    log('server started on another database');
    for (const person of [alice, bob]) {
      await waitStatus(person, 'online');
      await waitOnline(person, ['alice', 'bob'], person.name);
      await waitUntil(person, 'the view cleared', () => !document.querySelector('#messages li.msg'));
      const lines = await notes(person);
      assert.match(lines[0] ?? '', /different message history/, `${person.name}: first line says why`);
      assert.ok(lines.slice(1).every((note) => /^\S+ (joined|left)$/.test(note)), `${person.name}: one line: ${JSON.stringify(lines)}`);
      assert.ok(await person.page.isHidden('#older'), `${person.name}: nothing older`);
    }
    await exchange(alice, bob, 'A new database, a fresh start.');
    await exchange(bob, alice, 'Nothing else on screen.');
    for (const person of [alice, bob]) assert.equal((await assertInServerOrder(person)).length, 2);
  });

  await step('no page errors, CSP violations or dialogs', async () => {
    for (const person of Object.values(people)) {
      assert.deepEqual(person.errors, [], `${person.name}: errors`);
      assert.deepEqual(person.dialogs, [], `${person.name}: dialogs`);
    }
  });
});
