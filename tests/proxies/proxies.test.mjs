// The chat page through proxies that let no WebSocket through, in Debian's headless Chromium: it
// falls back to Server-Sent Events or long-polling, names the transport in its status bar, and
// chats with a page on a direct WebSocket, every message once. Run through ./run.sh, which starts
// wschat, two nginx and a Squid, and passes:
//   WSCHAT_ADDR        host:port of wschat (the direct page's address)
//   WSCHAT_LOG         its log, with the wire trace
//   WSCHAT_OUT         where failure screenshots go (target/proxies)
//   NGINX_BIN, NGINX_PREFIX, NGINX_PORT   the default nginx (the test restarts it)
//   NGINX_BUFFER_PORT  nginx told to ignore X-Accel-Buffering
//   SQUID_PORT, SQUID_ACCESS_LOG          Squid as a forward proxy, and its access log
//   SQUID_OUTGOING     the address Squid connects to wschat from (a --trusted-proxy of wschat)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  WAIT_MS,
  assertOnce,
  exchange,
  launchChromium,
  openChat,
  say,
  setNickname,
  status,
  stepsOf,
  waitMessage,
  waitStatus,
  waitUntil,
} from '../browser/pages.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests/proxies/run.sh`);
  return value;
};
const ADDR = env('WSCHAT_ADDR');
const LOG = env('WSCHAT_LOG');
const OUT = env('WSCHAT_OUT');
const NGINX_BIN = env('NGINX_BIN');
const NGINX_PREFIX = env('NGINX_PREFIX');
const NGINX_PORT = Number(env('NGINX_PORT'));
const NGINX_BUFFER_PORT = Number(env('NGINX_BUFFER_PORT'));
const SQUID_PORT = Number(env('SQUID_PORT'));
const SQUID_ACCESS_LOG = env('SQUID_ACCESS_LOG');
const SQUID_OUTGOING = env('SQUID_OUTGOING');

const DIRECT_URL = `http://${ADDR}/`;
const NGINX_URL = `http://127.0.0.1:${NGINX_PORT}/`;
const NGINX_BUFFER_URL = `http://127.0.0.1:${NGINX_BUFFER_PORT}/`;
// What the status bar says once online over each transport (src/page/app.js, TRANSPORT_NAMES).
const ONLINE = { websocket: 'Online · WebSocket', sse: 'Online · Server-Sent Events', poll: 'Online · long-polling' };
// The page gives a transport this long to bring its welcome (app.js, WELCOME_TIMEOUT_MS).
const WELCOME_TIMEOUT_MS = 5_000;
// Long enough for a WebSocket to fail and an event stream to time out before long-polling works.
const FALLBACK_WAIT_MS = WAIT_MS + WELCOME_TIMEOUT_MS;

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

let direct; // no proxy
let viaSquid; // every request through Squid, loopback included
const people = {};

before(async () => {
  direct = await launchChromium();
  // Chromium sends loopback requests past any proxy unless told otherwise: <-loopback> removes
  // that implicit bypass rule.
  viaSquid = await launchChromium([`--proxy-server=http://127.0.0.1:${SQUID_PORT}`, '--proxy-bypass-list=<-loopback>']);
  log(`chromium ${direct.version()}`);
});

after(async () => {
  await direct?.close();
  await viaSquid?.close();
});

/** Opens the chat as `name` and records the page's HTTP requests to the chat's endpoints too
 * (`requests`: method, path with query, headers), in the order the page made them. */
async function open(name, browser, url, { setup, connecting, wait = WAIT_MS } = {}) {
  const requests = [];
  const person = await openChat(browser, name, url, {
    out: OUT,
    setup: async (context) => {
      context.on('request', (request) => {
        const { pathname, search } = new URL(request.url());
        if (['/sse', '/poll', '/send'].includes(pathname)) {
          requests.push({ method: request.method(), path: pathname + search, headers: request.headers(), body: request.postData() });
        }
      });
      if (setup) await setup(context);
    },
    connecting,
    statusWait: wait,
  });
  person.requests = requests;
  people[name] = person;
  const { transport, text } = await status(person);
  log(`${name}: ${text} (${transport})`);
  return person;
}

/** The status bar says online over `transport`, by name. */
async function assertOnline(person, transport) {
  assert.deepEqual(await status(person), { state: 'online', transport, text: ONLINE[transport] }, `${person.name}: status bar`);
}

/** Picks a nickname and waits until the server confirmed it. */
async function nickname(person, nick) {
  await setNickname(person, nick);
  await waitUntil(person, `own nickname ${nick}`, (nick) => document.querySelector('#online li.me')?.firstChild.textContent === nick, nick);
}

/** One message each way between `person` and alice (direct, WebSocket): each acked by its sender,
 * and shown once on both pages. */
async function chatWithAlice(person, label) {
  const { alice } = people;
  const texts = [`${person.name} via ${label}: hello alice`, `alice to ${person.name} via ${label}: hello`];
  await exchange(person, alice, texts[0]);
  await exchange(alice, person, texts[1]);
  for (const who of [person, alice]) await assertOnce(who, texts);
}

/** The `POST /send` bodies of a page, as envelopes. */
const posted = (person) =>
  person.requests.filter((r) => r.method === 'POST').flatMap((r) => [JSON.parse(r.body)].flat());
const streams = (person) => person.requests.filter((r) => r.path.startsWith('/sse'));

/** The request heads wschat received, from its wire trace (`#N <- line`): one array of lines per
 * request, request line first. */
function requestHeads() {
  const heads = [];
  const current = new Map(); // connection → the head being read on it
  for (const line of readFileSync(LOG, 'utf8').split('\n')) {
    const m = /^#(\d+) <- (.*)$/.exec(line);
    if (!m) continue;
    const [, conn, text] = m;
    if (/^[A-Z]+ \S+ HTTP\/1\.\d$/.test(text)) {
      const head = [text];
      heads.push(head);
      current.set(conn, head);
    } else if (/^[\w-]+: /.test(text) && !/^(POLL|POST|SSE) /.test(text)) {
      current.get(conn)?.push(text);
    }
  }
  return heads;
}

/** Polls `check()` every 100 ms for up to WAIT_MS; names `what` on timeout. */
async function waitFor(check, what) {
  for (const t0 = Date.now(); Date.now() - t0 < WAIT_MS; await sleep(100)) {
    if (check()) return;
  }
  throw new Error(`timed out waiting for ${what}`);
}

// ---- the default nginx, restarted by the test ----

const nginxPid = () => Number(readFileSync(path.join(NGINX_PREFIX, 'nginx.pid'), 'utf8'));

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function waitPort(port, open) {
  for (let i = 0; i < 100; i++) {
    if ((await portOpen(port)) === open) return;
    await sleep(100);
  }
  throw new Error(`port ${port} still ${open ? 'closed' : 'open'} after 10 s`);
}

/** SIGTERM: nginx's fast shutdown closes every connection it proxies. */
async function stopNginx() {
  process.kill(nginxPid(), 'SIGTERM');
  await waitPort(NGINX_PORT, false);
}

/** The same nginx again; it writes its pid file, which run.sh's cleanup reads. */
async function startNginx() {
  const args = ['-p', NGINX_PREFIX, '-c', path.join(NGINX_PREFIX, 'nginx.conf'), '-e', path.join(NGINX_PREFIX, 'error.log')];
  const child = spawn(NGINX_BIN, args, { detached: true, stdio: 'ignore' });
  child.unref();
  await waitPort(NGINX_PORT, true);
}

// ---- the test ----

test('the page falls back through proxies that block WebSocket, and chats with a direct page', { timeout: 170_000 }, async (t) => {
  const step = stepsOf(t, log);

  await step('alice, without a proxy, is on a WebSocket', async () => {
    const alice = await open('alice', direct, DIRECT_URL);
    await nickname(alice, 'alice');
    await assertOnline(alice, 'websocket');
    assert.deepEqual(alice.requests, [], 'alice: no plain-HTTP transport used');
  });

  await step('through nginx (proxy_pass, Upgrade dropped): the WebSocket fails, Server-Sent Events carry the chat', async () => {
    const bob = await open('bob', direct, NGINX_URL);
    // The page tried a WebSocket first: nginx passed the upgrade on without its Upgrade header,
    // so wschat served the page instead of a 101.
    assert.equal(bob.sockets.length, 1, 'bob: one WebSocket attempt');
    assert.ok(bob.sockets[0].isClosed(), 'bob: the WebSocket attempt failed');
    await assertOnline(bob, 'sse');
    await nickname(bob, 'bob');
    await chatWithAlice(bob, 'nginx');
    assert.equal(streams(bob).length, 1, 'bob: one event stream');
    assert.ok(!posted(bob).some((m) => m.type === 'resume'), 'bob: one session, never resumed');
  });

  await step('nginx restarts twice: the event stream comes back on the same session, nothing lost or doubled', async () => {
    const { alice, bob } = people;
    const texts = [];
    for (const round of [1, 2]) {
      await stopNginx();
      // Said while bob's stream is cut: his session keeps it for him.
      const text = `alice, while nginx was down (${round})`;
      texts.push(text);
      await say(alice, text);
      await waitMessage(alice, { nick: 'alice', text, mine: true });
      await sleep(500);
      await startNginx();
      log(`nginx restarted (${round})`);
      await waitUntil(bob, `alice's message ${round}`, (text) =>
        [...document.querySelectorAll('#messages li.msg .text')].some((p) => p.textContent === text), text);
      await waitStatus(bob, 'online');
    }
    // The first stream was opened without a session id; the page reopened it with its session id
    // once, and the browser's own reconnect then said where it was with Last-Event-ID.
    const opened = streams(bob);
    assert.ok(opened.length >= 3, `bob: the stream reopened: ${JSON.stringify(opened.map((r) => r.path))}`);
    assert.equal(opened.filter((r) => !r.path.includes('sid=')).length, 1, 'bob: one new session');
    assert.match(opened[1].path, /^\/sse\?sid=[0-9a-f]{32}&since=\d+$/, 'bob: reopened with its session id');
    // (The browser adds Last-Event-ID below what Playwright sees: the server's trace shows it.)
    const sid = opened[1].path.match(/sid=([0-9a-f]{32})/)[1];
    const resumed = requestHeads().filter((head) => head[0].startsWith(`GET /sse?sid=${sid}&`));
    const ids = resumed.map((head) => head.find((line) => /^last-event-id:/i.test(line)) ?? null);
    assert.ok(ids.some((id) => /: [1-9]\d*$/.test(id ?? '')), `bob: the browser resumed with Last-Event-ID: ${JSON.stringify(ids)}`);
    assert.ok(!posted(bob).some((m) => m.type === 'resume'), 'bob: never needed a new session');
    await assertOnce(bob, texts);
    await assertOnline(bob, 'sse');
    await chatWithAlice(bob, 'nginx, after its restarts');
  });

  await step('bob says something while nginx is down: pending, then delivered once when it is back', async () => {
    const { alice, bob } = people;
    await stopNginx();
    const text = 'bob, said while nginx was down';
    await say(bob, text);
    // The POST fails and ends the link; the page keeps Server-Sent Events (they worked) and
    // reconnects with its backoff, sending the message again under the same key.
    await waitUntil(bob, 'the message pending', (text) =>
      [...document.querySelectorAll('#messages li.msg.pending .text')].some((p) => p.textContent === text), text);
    await sleep(1_000);
    await startNginx();
    log('nginx restarted (3)');
    await waitMessage(bob, { nick: 'bob', text, mine: true });
    await waitMessage(alice, { nick: 'bob', text });
    await waitStatus(bob, 'online');
    await assertOnline(bob, 'sse');
    for (const who of [alice, bob]) await assertOnce(who, [text]);
    assert.equal(bob.sockets.length, 1, 'bob: no WebSocket attempt after it failed once');
    await chatWithAlice(bob, 'nginx, after the outage');
  });

  await step('a reload stays on the transport that worked; a new tab tries the WebSocket first again', async () => {
    const { bob } = people;
    const sockets = bob.sockets.length;
    await bob.page.reload({ timeout: WAIT_MS });
    await waitStatus(bob, 'online');
    await assertOnline(bob, 'sse');
    assert.equal(bob.sockets.length, sockets, 'bob: no WebSocket attempt after the reload');
    const frank = await open('frank', direct, NGINX_URL);
    assert.equal(frank.sockets.length, 1, 'frank: tried a WebSocket first');
    await assertOnline(frank, 'sse');
    await frank.context.close();
  });

  await step('through nginx that buffers the event stream too: long-polling carries the chat', async () => {
    const t0 = Date.now();
    // Typed at once, while the page still tries the WebSocket and then the (held back) event
    // stream: it waits in the outbox and goes out once, on the transport that works.
    const early = 'carol, typed before any transport worked';
    const carol = await open('carol', direct, NGINX_BUFFER_URL, {
      wait: FALLBACK_WAIT_MS,
      connecting: async (person) => {
        assert.notEqual((await status(person)).state, 'online', 'carol: not online yet');
        await say(person, early);
      },
    });
    const took = Date.now() - t0;
    assert.equal(carol.sockets.length, 1, 'carol: one WebSocket attempt');
    assert.equal(streams(carol).length, 1, 'carol: one event stream attempt');
    assert.ok(took >= WELCOME_TIMEOUT_MS, `carol: the event stream was given ${WELCOME_TIMEOUT_MS} ms (online after ${took} ms)`);
    await assertOnline(carol, 'poll');
    // Sent as the anonymous name the long-poll session got (the held-back stream's session never
    // reached the page, so nothing was sent on it).
    const anonymous = await carol.page.$eval('#online li.me', (li) => li.firstChild.textContent);
    await waitMessage(carol, { nick: anonymous, text: early, mine: true });
    await waitMessage(people.alice, { nick: anonymous, text: early });
    for (const who of [carol, people.alice]) await assertOnce(who, [early]);
    assert.equal(posted(carol).filter((m) => m.type === 'message').length, 1, 'carol: the early message posted once');
    await nickname(carol, 'carol');
    await chatWithAlice(carol, 'buffering nginx');
  });

  await step('through Squid (CONNECT to other ports than 443 refused): the page falls back and chats', async () => {
    const dave = await open('dave', viaSquid, DIRECT_URL, { wait: FALLBACK_WAIT_MS });
    assert.equal(dave.sockets.length, 1, 'dave: one WebSocket attempt');
    const { transport } = await status(dave);
    assert.ok(['sse', 'poll'].includes(transport), `dave: on a plain-HTTP transport, not ${transport}`);
    await assertOnline(dave, transport);
    await nickname(dave, 'dave');
    await chatWithAlice(dave, 'Squid');
    // Chromium really went through Squid: it asked for a tunnel to wschat's port, was refused, and
    // sent the chat's requests through it (Squid logs a request once it is over: the POSTs).
    const [host, port] = ADDR.split(':');
    const access = readFileSync(SQUID_ACCESS_LOG, 'utf8');
    assert.match(access, new RegExp(`TCP_DENIED/403 .* CONNECT ${host}:${port} `), 'squid: the WebSocket tunnel refused');
    // (Squid's log leaves out query strings.)
    assert.match(access, new RegExp(` POST http://${host}:${port}/send\\? `), 'squid: the POSTs went through it');
    // wschat believed Squid's X-Forwarded-For (it trusts SQUID_OUTGOING): a request it refuses is
    // logged as from the browser (127.0.0.1) via Squid. (Its fallback requests are logged only in
    // the trace, which does not name the client.)
    const refused = await dave.page.evaluate(() => fetch('/no-such-endpoint-via-squid').then((r) => r.status));
    assert.equal(refused, 404, 'dave: a request for no endpoint');
    const via = new RegExp(`127\\.0\\.0\\.1 via ${SQUID_OUTGOING.replaceAll('.', '\\.')}:\\d+ rejected: 404 no endpoint at /no-such-endpoint-via-squid`);
    await waitFor(() => via.test(readFileSync(LOG, 'utf8')), `wschat's log: ${via}`);
  });

  await step('a WebSocket that opens (101) and then says nothing: the page moves on after its timeout', async () => {
    // Playwright stands in for the proxy: it accepts the page's WebSocket and never connects it
    // to the server.
    const t0 = Date.now();
    const erin = await open('erin', direct, DIRECT_URL, {
      wait: FALLBACK_WAIT_MS,
      setup: (context) => context.routeWebSocket(/.*/, () => {}),
    });
    const took = Date.now() - t0;
    assert.ok(took >= WELCOME_TIMEOUT_MS, `erin: the silent WebSocket was given ${WELCOME_TIMEOUT_MS} ms (online after ${took} ms)`);
    await assertOnline(erin, 'sse');
    await nickname(erin, 'erin');
    await chatWithAlice(erin, 'a silent WebSocket');
  });

  await step('no page errors, CSP violations or dialogs', async () => {
    for (const person of Object.values(people)) {
      assert.deepEqual(person.errors, [], `${person.name}: errors`);
      assert.deepEqual(person.dialogs, [], `${person.name}: dialogs`);
    }
  });
});
