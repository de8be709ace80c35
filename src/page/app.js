// The wschat client: plain DOM and one connection to the server, no dependencies. The connection is
// a WebSocket, or Server-Sent Events or long-polls where a proxy lets no WebSocket through (see
// "transports" below).
//
// Every piece of text from the network goes in through textContent, never innerHTML, so a message
// like <img src=x onerror=alert(1)> shows literally (the CSP would block it anyway: defence in depth).
//
// Nothing typed is lost: each message gets a key made here and waits in an outbox, kept in
// localStorage, until the server acks it (an ack means the message is on disk). What was not acked
// when the connection dropped, or when the page was reloaded, goes again with the same key on the
// next connection; the server stores and shows a key once, so every message counts exactly once
// however often it is sent.
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  roomName: $('room-name'),
  older: $('older'),
  messages: $('messages'),
  online: $('online'),
  onlineCount: $('online-count'),
  sendForm: $('send-form'),
  text: $('text'),
  sendError: $('send-error'),
  nickForm: $('nick-form'),
  nick: $('nick'),
  nickError: $('nick-error'),
  roomForm: $('room-form'),
  room: $('room'),
  roomError: $('room-error'),
};

// Reconnect delays: 0.5 s doubling up to 10 s, each scaled by 0.5–1.5 so that clients dropped by
// the same server restart do not all come back in the same instant.
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;
// A message the server could not take yet (its store failed, or the page's own replay of the
// outbox went over the rate limit) goes again after 1 s, doubling up to 10 s.
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 10_000;
// The close code of a connection whose session another connection took over with `resume`.
const RESUMED_ELSEWHERE = 4001;
// Message keys: 16 random bytes, 22 characters of base64url, well inside the server's 1-64
// printable ASCII characters; 128 bits make two keys of one room colliding unthinkable.
const KEY_BYTES = 16;
const VALID_KEY = /^[\x20-\x7e]{1,64}$/;

// ---- transports ----
//
// The chat speaks the same envelopes over three transports, tried in this order: a WebSocket;
// Server-Sent Events (an EventSource for what the server says, POST /send for what we say); and
// long-polling (GET /poll in a loop, POST /send). A proxy may let one through and not another:
// drop the Upgrade header (nginx's default proxy_pass), refuse CONNECT to the server's port (Squid,
// for a WebSocket), answer 101 and then deliver nothing, or buffer an event stream. So a transport
// counts as working only once its first `welcome` arrives. The page moves on only from a transport
// that never worked; one that did is kept, reconnecting with the backoff below, since a dropped
// connection says nothing about the proxies on the way. The transport that worked is remembered for
// the tab (a reload goes straight to it); a new tab tries the WebSocket first again.
//
// Each transport is a link: `send(json)`, `isOpen()`, `close()`, and three callbacks: `message`
// (an envelope from the server), `lost` (the session is over: the close code, when there is one)
// and `stalled` (the flow of events stopped, or started again, while the session lives on).

const TRANSPORTS = ['websocket', 'sse', 'poll'];
const TRANSPORT_NAMES = { websocket: 'WebSocket', sse: 'Server-Sent Events', poll: 'long-polling' };
// How long a new link may take to bring its `welcome`: the server sends it at once, so a few
// seconds without one means something on the way holds the transport's bytes back.
const WELCOME_TIMEOUT_MS = 5_000;
// An event stream that stopped is reopened by the browser after the server's `retry:` (2 s); the
// status says "Reconnecting" only when the events stay away longer than that.
const STALL_SHOWN_AFTER_MS = 3_000;
// The server holds a poll up to 25 s before answering `[]`: a poll still unanswered well after
// that was lost on the way (a proxy that never answers), and is asked again.
const POLL_TIMEOUT_MS = 40_000;
// Envelopes that wait while a POST /send is on its way go together in the next one, as a JSON
// array of at most this many bytes: well under the server's default --max-message-size (64 KiB),
// over which it answers 413.
const MAX_POST_BYTES = 32 * 1024;
// The server answers 409 while another POST of the session is still arriving; we send one at a
// time, so this only follows a POST the network gave up on: try again shortly.
const CONFLICT_RETRY_MS = 250;

const TRANSPORT_KEY = `wschat.transport.${location.host}`;

const parseJson = (text) => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // Not ours to fix: ignore rather than break the page.
  }
};

/** Today's reconnect delay for the `attempt`-th try in a row. */
function backoff(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return base * (0.5 + Math.random());
}

function webSocketLink(on) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}`);
  ws.addEventListener('message', (event) => {
    const msg = parseJson(event.data);
    if (msg) on.message(msg);
  });
  // `error` is always followed by `close`, so only `close` needs handling.
  ws.addEventListener('close', (event) => on.lost(event.code));
  return {
    send: (json) => ws.send(json),
    isOpen: () => ws.readyState === WebSocket.OPEN,
    close: () => ws.close(),
  };
}

/** What a plain-HTTP session says: POST /send, one at a time, in order. What is said meanwhile
 * waits and goes in the next POST. A POST that fails ends the link, since nobody can tell whether
 * the server took it; the page then resends under the same keys on a new session, and the server
 * counts each message once. */
function poster(sid, fail) {
  const queue = []; // envelopes as JSON text, oldest first
  const bytes = (text) => new TextEncoder().encode(text).length + 1;
  let busy = false;
  async function pump() {
    if (busy || !queue.length) return;
    busy = true;
    let n = 1;
    for (let size = bytes(queue[0]); n < queue.length && size + bytes(queue[n]) <= MAX_POST_BYTES; n++) {
      size += bytes(queue[n]);
    }
    const body = n === 1 ? queue[0] : `[${queue.slice(0, n).join(',')}]`;
    let status = 0;
    try {
      const response = await fetch(`/send?sid=${sid()}`, {
        method: 'POST',
        body,
        headers: { 'Content-Type': 'application/json' },
      });
      status = response.status;
    } catch {
      // The network failed: status 0.
    }
    busy = false;
    if (status === 409) {
      setTimeout(pump, CONFLICT_RETRY_MS);
      return;
    }
    if (status !== 204) {
      fail();
      return;
    }
    queue.splice(0, n);
    pump();
  }
  return (json) => {
    queue.push(json);
    pump();
  };
}

/** Hands a plain-HTTP link's events to the page; `closed` is the server ending the session. */
function deliver(msg, on, end) {
  if (msg?.type === 'closed') end(msg.payload?.code ?? null);
  else if (msg) on.message(msg);
}

function sseLink(on) {
  let source = null;
  let sid = null;
  let seq = 0; // the id of the last event taken
  let over = false;
  const end = (code = null) => {
    if (over) return;
    over = true;
    source.close();
    on.lost(code);
  };
  const post = poster(() => sid, end);
  const open = (url) => {
    const stream = new EventSource(url);
    source = stream;
    stream.addEventListener('session', (event) => {
      sid = parseJson(event.data)?.sid ?? null;
    });
    stream.addEventListener('message', (event) => {
      seq = Number(event.lastEventId) || seq;
      deliver(parseJson(event.data), on, end);
    });
    stream.addEventListener('open', () => on.stalled(false));
    stream.addEventListener('error', () => {
      if (over || source !== stream) return;
      // CLOSED: the browser gave up, on a 204 (the session, or the point to resume from, is gone)
      // or on an answer that is no event stream (a proxy's error page).
      if (stream.readyState === EventSource.CLOSED) return end();
      // Otherwise the browser reconnects by itself, and resumes with Last-Event-ID. Only the first
      // stream's address lacks the session id: that one the page reopens itself, once.
      if (!url.includes('sid=')) {
        if (sid === null) return end();
        stream.close();
        open(`/sse?sid=${sid}&since=${seq}`);
        return;
      }
      on.stalled(true);
    });
  };
  open('/sse');
  return {
    send: post,
    isOpen: () => !over && sid !== null,
    close: () => {
      over = true;
      source.close();
    },
  };
}

function pollLink(on) {
  let sid = null;
  let since = 0; // events are numbered without gaps: the next poll asks for those after this one
  let over = false;
  let controller = null;
  const end = (code = null) => {
    if (over) return;
    over = true;
    controller?.abort();
    on.lost(code);
  };
  const post = poster(() => sid, end);
  (async () => {
    for (let failures = 0; !over; ) {
      controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), POLL_TIMEOUT_MS);
      let status = 0;
      let events = null;
      try {
        // No `cache` option: the server marks every answer `no-store`, and the option would only
        // add two request header fields to every poll.
        const response = await fetch(sid === null ? '/poll' : `/poll?sid=${sid}&since=${since}`, { signal: controller.signal });
        status = response.status;
        if (status === 200) events = await response.json();
      } catch {
        // The network failed, the poll timed out, or the answer was not JSON.
      } finally {
        clearTimeout(timer);
      }
      if (over) return;
      // 404: the session expired; 204: it ended (or another poll of it took over).
      if (status === 404 || status === 204) return end();
      if (!Array.isArray(events)) {
        if (sid === null) return end();
        // Lost on the way: the session still holds those events; ask again after a pause.
        on.stalled(true);
        await new Promise((resolve) => setTimeout(resolve, backoff(failures++)));
        continue;
      }
      failures = 0;
      on.stalled(false);
      if (sid === null) {
        const first = events.shift();
        if (first?.type !== 'session' || typeof first.sid !== 'string') return end();
        sid = first.sid;
      }
      since += events.length;
      for (const msg of events) {
        if (over) return;
        deliver(msg, on, end);
      }
    }
  })();
  return {
    send: post,
    isOpen: () => !over && sid !== null,
    close: () => {
      over = true;
      controller?.abort();
    },
  };
}

const LINKS = { websocket: webSocketLink, sse: sseLink, poll: pollLink };

// ---- what survives a reload ----

// sessionStorage is per tab and survives a reload: the tab's id, and the session to restore (the
// resume token of the latest welcome, the nickname and the room). The outbox is in localStorage,
// which outlives the tab too, under this tab's id and this server's host: two tabs never send
// each other's messages.
const saved = {
  read(area, key) {
    try {
      return JSON.parse(globalThis[area].getItem(key));
    } catch {
      return null; // Storage disabled, or not ours to read: start empty.
    }
  },
  write(area, key, value) {
    try {
      globalThis[area].setItem(key, JSON.stringify(value));
    } catch {
      // Storage disabled or full: the page still works, it only forgets on reload.
    }
  },
};

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

const SESSION_KEY = `wschat.session.${location.host}`;
const TAB_KEY = `wschat.tab.${location.host}`;
const tabId = saved.read('sessionStorage', TAB_KEY) ?? newKey();
saved.write('sessionStorage', TAB_KEY, tabId);
const OUTBOX_KEY = `wschat.outbox.${location.host}.${tabId}`;

/** The outbox as stored, keeping only well-formed entries (the storage is only as tidy as its
 * last writer). */
function loadOutbox() {
  const entries = saved.read('localStorage', OUTBOX_KEY);
  if (!Array.isArray(entries)) return [];
  const isString = (value) => typeof value === 'string';
  return entries.filter(
    (e) => e && VALID_KEY.test(e.key) && isString(e.text) && isString(e.room) && isString(e.nickname) && Number.isFinite(e.ts),
  );
}

const session = saved.read('sessionStorage', SESSION_KEY) ?? {};
// The transport that last worked in this tab.
const remembered = saved.read('sessionStorage', TRANSPORT_KEY);

const state = {
  link: null, // the connection to the server, over one of the TRANSPORTS
  transport: TRANSPORTS.includes(remembered) ? remembered : TRANSPORTS[0], // in use, or being tried
  worked: false, // the transport brought a welcome in this page: the page keeps it
  welcomeTimer: null, // gives up a link whose welcome is late (WELCOME_TIMEOUT_MS)
  stallTimer: null, // shows a stalled event flow (STALL_SHOWN_AFTER_MS)
  greeted: false, // this connection got its first `welcome`
  greeting: null, // that welcome, to restore the session from if `resume` fails
  anonymous: null, // the name the server gave this connection in that welcome
  attempt: 0, // connection attempts since the last one that reached `welcome`
  reconnectTimer: null,
  nick: typeof session.nick === 'string' ? session.nick : null, // the user's choice, as the server confirmed it
  me: null, // our nickname right now, as the server knows it
  room: typeof session.room === 'string' ? session.room : 'lobby', // our room; rejoined on reconnect
  resume: typeof session.resume === 'string' ? session.resume : null, // the token of the latest welcome
  epoch: null, // the server's database, as the latest welcome named it
  newEpoch: false, // a welcome named another database: the next room shown starts empty, saying why
  shownRoom: null, // the room whose messages are on screen
  online: new Set(),
  seen: new Map(), // message id → message, of every message on screen or held, for dedup
  held: new Map(), // id → a message of ours that may be an unacked outbox entry (see `mayBeOurs`)
  lastId: 0, // newest message id seen in the shown room, to catch up from
  loadingOlder: false, // a `history` request for older messages is on its way
  // Requests awaiting their answer, oldest first. The server answers each request with one
  // message (ack, renamed, welcome, history or error), in the order of the requests, and `error`
  // does not say which request it is about: this queue does.
  inflight: [],
  outbox: loadOutbox(), // [{key, text, room, nickname, ts, sent}], oldest first, until acked
  items: new Map(), // outbox key → its list entry
  retryTimer: null, // while set, the outbox waits (see RETRY_MIN_MS)
  retryAttempt: 0,
};

function saveSession() {
  saved.write('sessionStorage', SESSION_KEY, { nick: state.nick, room: state.room, resume: state.resume });
}

function saveOutbox() {
  saved.write('localStorage', OUTBOX_KEY, state.outbox);
}

// ---- connection ----

function connect() {
  state.reconnectTimer = null;
  state.greeted = false;
  state.inflight = [];
  const link = LINKS[state.transport]({
    message: (msg) => state.link === link && receive(msg),
    lost: (code) => state.link === link && linkLost(code),
    stalled: (stalled) => state.link === link && stall(stalled),
  });
  state.link = link;
  clearTimeout(state.welcomeTimer);
  state.welcomeTimer = setTimeout(() => {
    if (state.link !== link || state.greeted) return;
    link.close();
    linkLost(null);
  }, WELCOME_TIMEOUT_MS);
  setStatus(everOnline() ? 'reconnecting' : 'connecting');
}

function receive(msg) {
  const handler = handlers[msg?.type];
  if (handler) handler(msg.payload ?? {});
}

/** The link is gone: its session is over, or it never got going. */
function linkLost(code) {
  state.link = null;
  state.inflight = [];
  state.loadingOlder = false;
  clearTimeout(state.welcomeTimer);
  stall(false);
  // Another connection (a duplicated tab) holds our session now, and the token went with it.
  if (code === RESUMED_ELSEWHERE) {
    state.resume = null;
    saveSession();
  }
  // The next connection sends the outbox at once; its rate limit starts afresh.
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  refreshPending();
  if (!state.worked) {
    // This transport never brought a welcome here: on to the next one at once, and after the
    // last, from the first again after the backoff.
    const next = (TRANSPORTS.indexOf(state.transport) + 1) % TRANSPORTS.length;
    state.transport = TRANSPORTS[next];
    if (next !== 0) {
      connect();
      return;
    }
  }
  scheduleReconnect();
}

/** Events stopped flowing on a link whose session lives on (or flow again). */
function stall(stalled) {
  if (!stalled) {
    clearTimeout(state.stallTimer);
    state.stallTimer = null;
    if (state.link && state.greeted && ui.status.dataset.state !== 'online') setStatus('online');
  } else if (state.stallTimer === null && state.greeted) {
    state.stallTimer = setTimeout(() => setStatus('reconnecting'), STALL_SHOWN_AFTER_MS);
  }
}

function scheduleReconnect() {
  const delay = backoff(state.attempt);
  state.attempt += 1;
  const kind = everOnline() ? 'reconnecting' : 'connecting';
  const verb = kind === 'connecting' ? 'Connecting' : 'Reconnecting';
  setStatus(kind, `${verb} (${TRANSPORT_NAMES[state.transport]}): retry in ${(delay / 1000).toFixed(1)} s…`);
  state.reconnectTimer = setTimeout(connect, delay);
}

// The browser says the network is back: no point waiting out the backoff.
window.addEventListener('online', () => {
  if (state.reconnectTimer === null) return;
  clearTimeout(state.reconnectTimer);
  connect();
});

function everOnline() {
  return state.me !== null;
}

function isOpen() {
  return Boolean(state.link?.isOpen()) && state.greeted;
}

/** Sends a request and remembers it until its answer; `about` says what the answer concerns. */
function send(type, payload, about = {}) {
  if (!isOpen()) return false;
  state.link.send(JSON.stringify({ type, payload }));
  state.inflight.push({ type, ...about });
  return true;
}

/** The request the next answer is about, if it is of one of these types. */
function nextRequest(...types) {
  return types.includes(state.inflight[0]?.type) ? state.inflight[0] : null;
}

/** Takes the oldest request off the queue if it is of one of these types. */
function takeRequest(...types) {
  return nextRequest(...types) ? state.inflight.shift() : null;
}

/** The status bar: the connection's state, named with the transport it uses or tries. */
function setStatus(kind, label) {
  const name = TRANSPORT_NAMES[state.transport];
  const labels = { connecting: `Connecting (${name})…`, online: `Online · ${name}`, reconnecting: `Reconnecting (${name})…` };
  ui.status.dataset.state = kind;
  ui.status.dataset.transport = state.transport;
  ui.status.textContent = label ?? labels[kind];
  // Names and rooms need the server; say so by disabling their buttons rather than failing later.
  // Messages need it only in the end: typed while offline, they wait in the outbox.
  for (const button of document.querySelectorAll('#nick-form button, #room-form button')) {
    button.disabled = kind !== 'online';
  }
  ui.older.disabled = kind !== 'online' || state.loadingOlder;
}

// ---- server messages ----

const handlers = {
  welcome(p) {
    if (state.epoch !== null && p.epoch !== state.epoch) state.newEpoch = true;
    state.epoch = p.epoch;
    const token = state.resume;
    state.resume = p.resume ?? null;
    state.me = p.nickname;
    if (!state.greeted) {
      // The server greets every connection in the lobby under a fresh name. After a reconnect
      // or a reload, take back our earlier session: by its resume token if we have one, which
      // also keeps our name when the server has not yet noticed the old connection is gone.
      state.greeted = true;
      state.greeting = p;
      state.anonymous = p.nickname;
      state.attempt = 0;
      clearTimeout(state.welcomeTimer);
      state.worked = true;
      saved.write('sessionStorage', TRANSPORT_KEY, state.transport);
      setStatus('online');
      saveSession();
      if (token === null || !send('resume', token)) restore(p);
      return;
    }
    if (takeRequest('join', 'resume')?.type === 'resume') resumed(p);
    ui.roomError.textContent = '';
    enterRoom(p);
  },

  message(p) {
    if (p.room === state.shownRoom) addMessage(p);
  },

  ack(p) {
    const request = takeRequest('message');
    state.retryAttempt = 0;
    const entry = settle(p.key ?? request?.key);
    if (!entry) return;
    const item = takeItem(entry);
    if (entry.room !== state.shownRoom) {
      item.remove();
    } else if (state.held.delete(p.id) || !state.seen.has(p.id)) {
      // Ours, with its place in the room's order now known.
      remember(p.id, { id: p.id, room: entry.room, nickname: state.me, text: entry.text });
      item.querySelector('.nick').textContent = state.me;
      item.classList.remove('pending', 'queued');
      markSent(item);
      place(item, p.id);
    } else {
      // Stored before the connection dropped, and already shown from history.
      item.remove();
    }
    releaseHeld();
  },

  joined(p) {
    if (p.room !== state.shownRoom) return;
    state.online.add(p.nickname);
    renderOnline();
    addNote(`${p.nickname} joined`);
  },

  left(p) {
    if (p.room !== state.shownRoom) return;
    state.online.delete(p.nickname);
    renderOnline();
    addNote(`${p.nickname} left`);
  },

  missed(p) {
    // The server could not show these before they were pruned: say so rather than leave a hole.
    if (p.room !== state.shownRoom) return;
    addNote(`messages ${p.after + 1}–${p.until} of this room were lost before they could be shown`);
  },

  renamed(p) {
    if (p.from === state.me) {
      // Our own rename: the answer to a `nickname`, or part of a `resume` (whose welcome follows).
      if (takeRequest('nickname')) {
        state.nick = p.to;
        saveSession();
        ui.nickError.textContent = '';
      }
      state.me = p.to;
    }
    if (p.room !== state.shownRoom) return;
    state.online.delete(p.from);
    state.online.add(p.to);
    renderOnline();
    if (p.from !== p.to) addNote(`${p.from} is now ${p.to}`);
  },

  history(p) {
    const older = takeRequest('history')?.dir === 'before';
    if (older) olderDone();
    if (p.room !== state.shownRoom) return;
    if (older) {
      showOlder(p);
      return;
    }
    p.messages.forEach(addMessage);
    // A long absence takes more than one page: go on from the newest of this one.
    const newest = p.messages.at(-1)?.id;
    if (p.more && newest !== undefined) send('history', { since: newest }, { dir: 'since' });
  },

  error(p) {
    const text = describeError(p);
    // A room whose history could not be read is entered all the same: this error comes just
    // before the welcome of the join or resume, which still awaits its answer.
    if (p.code === 'store_unavailable' && nextRequest('join', 'resume')) {
      ui.sendError.textContent = text;
      return;
    }
    // Otherwise the error answers the oldest request; the rate limit answers any of them.
    const request = state.inflight.shift();
    switch (request?.type) {
      case 'nickname':
        ui.nickError.textContent = text;
        break;
      case 'join':
        ui.roomError.textContent = text;
        break;
      case 'resume':
        // Unknown or expired token (the server restarted, or we were away too long): as a new
        // connection, ask for our name and room back.
        restore(state.greeting);
        break;
      case 'message':
        refused(request, p);
        break;
      case 'history':
        if (request.dir === 'before') olderDone();
        ui.sendError.textContent = text;
        break;
      default:
        ui.sendError.textContent = text;
    }
  },
};

function describeError({ code, message }) {
  const friendly = {
    nickname_taken: 'That nickname is taken.',
    rate_limited: 'Too fast: wait a moment.',
    too_long: 'Too long.',
    store_unavailable: 'The server cannot store messages right now.',
  };
  return friendly[code] ?? message ?? String(code);
}

/** As a fresh connection: asks for the user's nickname and room back, the way it had them. */
function restore(greeting) {
  if (state.nick !== null && state.nick !== greeting.nickname) send('nickname', state.nick);
  if (state.room !== greeting.room) send('join', state.room); // Its own welcome fills the screen.
  else enterRoom(greeting);
}

/** `resume` answered with the session's welcome. */
function resumed(p) {
  // The session had ended and somebody took its name meanwhile: the server left us under this
  // connection's name, and the `nickname_taken` that says so comes next, as if we had asked.
  if (state.nick !== null && p.nickname !== state.nick && p.nickname === state.anonymous) {
    state.inflight.unshift({ type: 'nickname' });
  }
}

/** Shows the room of a `welcome`: its people and history, and catches up on what we missed. */
function enterRoom(p) {
  const since = state.lastId;
  const fresh = p.room !== state.shownRoom || state.newEpoch;
  if (fresh) {
    ui.messages.replaceChildren();
    forgetMessages();
    state.shownRoom = p.room;
    if (state.newEpoch) {
      // Ids and history of another database: what we showed would mislead next to them.
      addNote('The server now keeps a different message history (its database changed): earlier messages are no longer shown.');
      state.newEpoch = false;
    }
  }
  state.room = p.room;
  saveSession();
  ui.roomName.textContent = p.room;
  state.online = new Set(p.online);
  renderOnline();
  p.history.forEach(addMessage);
  if (fresh) {
    showPending(p.room);
    setOlder(p.history.length > 0);
  } else if (since > 0 && !(p.history.length > 0 && p.history[0].id <= since)) {
    // Back in the room we were showing, and its welcome does not reach back to what we saw:
    // ask for what we missed while away.
    send('history', { since }, { dir: 'since' });
  }
  flush();
  refreshPending(); // Those that wait for another room say so.
}

function forgetMessages() {
  state.seen.clear();
  state.held.clear();
  state.lastId = 0;
}

function remember(id, message) {
  state.seen.set(id, message);
  state.lastId = Math.max(state.lastId, id);
}

// ---- the outbox ----

/** Whether requests can go to the room on screen: connected, and not moving between rooms. */
function ready() {
  const moving = state.inflight.some((request) => request.type === 'join' || request.type === 'resume');
  return isOpen() && state.shownRoom === state.room && !moving;
}

const inFlight = (entry) => state.inflight.some((request) => request.key === entry.key);

/** Sends what waits in the outbox for the room we are in, oldest first. */
function flush() {
  if (!ready() || state.retryTimer !== null) return;
  transmit(state.outbox.filter((entry) => entry.room === state.room && !inFlight(entry)), false);
}

/** Sends outbox entries. `live`: the user just typed them while connected, so the rate limit's
 * refusal is theirs to see; for a replay of the outbox it is the page's own burst, and they wait. */
function transmit(entries, live) {
  if (!entries.length) return;
  // Marked before they leave: after a reload from here on, they may already be stored.
  for (const entry of entries) {
    entry.sent = true;
    delete entry.retry;
  }
  saveOutbox();
  for (const entry of entries) {
    send('message', { text: entry.text, key: entry.key }, { key: entry.key, live });
    updatePending(entry);
  }
}

/** Removes an entry from the outbox: acked, or refused for good. */
function settle(key) {
  const i = state.outbox.findIndex((entry) => entry.key === key);
  if (i < 0) return null;
  const [entry] = state.outbox.splice(i, 1);
  saveOutbox();
  return entry;
}

/** The server refused a message: it waits and goes again if it may succeed later, or fails. */
function refused(request, p) {
  const entry = state.outbox.find((e) => e.key === request.key);
  if (!entry) return;
  const later = p.code === 'store_unavailable' || (p.code === 'rate_limited' && !request.live);
  if (later) {
    entry.retry = p.code === 'store_unavailable' ? 'not stored yet: the server cannot store it now; retrying' : 'too fast: retrying';
    updatePending(entry);
    scheduleRetry();
    return;
  }
  settle(entry.key);
  markFailed(takeItem(entry), describeError(p));
  releaseHeld();
}

function scheduleRetry() {
  if (state.retryTimer !== null) return;
  const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** state.retryAttempt);
  state.retryAttempt += 1;
  state.retryTimer = setTimeout(() => {
    state.retryTimer = null;
    flush();
  }, delay);
}

/** Whether `m` may be one of our unacked messages that reached the server before the connection
 * dropped (its ack lost): then it is held off screen until that message's ack names its id, so
 * that it never shows twice, once from history and once as pending. */
function mayBeOurs(m) {
  return state.outbox.some(
    (e) => e.sent && e.room === m.room && e.text === m.text && (m.nickname === state.me || m.nickname === e.nickname),
  );
}

/** Shows the held messages no outbox entry can claim any more. */
function releaseHeld() {
  for (const [id, m] of state.held) {
    if (mayBeOurs(m)) continue;
    state.held.delete(id);
    show(m);
  }
}

/** The list entry of an outbox entry, made on first use. */
function pendingItem(entry) {
  let item = state.items.get(entry.key);
  if (!item) {
    item = messageItem(entry.nickname, entry.text, entry.ts, true);
    item.classList.add('pending');
    state.items.set(entry.key, item);
  }
  updatePending(entry);
  return item;
}

function takeItem(entry) {
  const item = pendingItem(entry);
  state.items.delete(entry.key);
  return item;
}

/** Says where a pending message stands. */
function updatePending(entry) {
  const item = state.items.get(entry.key);
  if (!item) return;
  const sending = inFlight(entry);
  item.classList.toggle('queued', !sending);
  let label = 'sending…';
  if (!sending) {
    if (!isOpen()) label = 'waiting for the connection';
    else label = entry.retry ?? (entry.room === state.room ? 'queued' : `waiting to be back in ${entry.room}`);
  }
  item.querySelector('.state').textContent = label;
}

function refreshPending() {
  state.outbox.forEach(updatePending);
}

/** Puts the pending messages of `room` at the bottom, oldest first. */
function showPending(room) {
  for (const entry of state.outbox) {
    if (entry.room === room) insert(pendingItem(entry));
  }
}

// ---- older messages ----

function setOlder(more) {
  ui.older.hidden = !more;
}

function olderDone() {
  state.loadingOlder = false;
  ui.older.disabled = !isOpen();
}

/** Older messages, above the oldest shown; the reader's view stays where it was. */
function showOlder(p) {
  const list = ui.messages;
  const fromBottom = list.scrollHeight - list.scrollTop;
  p.messages.forEach(addMessage);
  list.scrollTop = list.scrollHeight - fromBottom;
  setOlder(p.more && p.messages.length > 0);
}

ui.older.addEventListener('click', () => {
  const oldest = ui.messages.querySelector('li[data-id]');
  if (!oldest) {
    setOlder(false);
    return;
  }
  if (!state.loadingOlder && send('history', { before: Number(oldest.dataset.id) }, { dir: 'before' })) {
    state.loadingOlder = true;
    ui.older.disabled = true;
  }
});

// ---- rendering (textContent only) ----

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A list entry for a message: nickname, time, text and, for our own, its delivery state. */
function messageItem(nickname, text, ts, mine) {
  const item = el('li', mine ? 'msg mine' : 'msg');
  const meta = el('div', 'meta');
  meta.append(el('span', 'nick', nickname), ' ');
  const time = el('time', 'time', new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = new Date(ts).toISOString();
  time.title = new Date(ts).toLocaleString();
  meta.append(time);
  if (mine) meta.append(' ', el('span', 'state'));
  item.append(meta, el('p', 'text', text));
  item.dataset.nickname = nickname;
  item.dataset.text = text;
  return item;
}

function addMessage(m) {
  if (state.seen.has(m.id)) return;
  remember(m.id, m);
  if (mayBeOurs(m)) state.held.set(m.id, m);
  else show(m);
}

function show(m) {
  const item = messageItem(m.nickname, m.text, m.ts, m.nickname === state.me);
  if (item.classList.contains('mine')) markSent(item);
  place(item, m.id);
}

function markSent(item) {
  item.classList.add('sent');
  item.querySelector('.state').textContent = 'sent';
}

function addNote(text) {
  insert(el('li', 'note', text), firstPending());
}

function markFailed(item, reason) {
  item.classList.replace('pending', 'failed');
  item.classList.remove('queued');
  item.querySelector('.state').textContent = reason;
}

/** Puts a stored message in id order, which is the order the server accepted them in, among the
 * messages on screen; messages still pending stay below them all. */
function place(item, id) {
  item.dataset.id = id;
  let before = null;
  for (const other of ui.messages.querySelectorAll('li[data-id]')) {
    if (Number(other.dataset.id) > id) {
      before = other;
      break;
    }
  }
  insert(item, before ?? firstPending());
}

const firstPending = () => ui.messages.querySelector('li.pending');

/** Inserts into the list before `before` (at the end if null), following the bottom unless the
 * reader scrolled up. */
function insert(item, before = null) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.insertBefore(item, before);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderOnline() {
  ui.nick.placeholder = state.me ?? '';
  const names = [...state.online].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  ui.online.replaceChildren(
    ...names.map((name) => {
      const item = el('li', name === state.me ? 'me' : '', name);
      if (name === state.me) item.append(el('span', 'you', ' (you)'));
      return item;
    }),
  );
  ui.onlineCount.textContent = `(${names.length})`;
}

// ---- user input ----

ui.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text.trim()) return;
  // Into the outbox first, so that not even a reload right now loses it; shown at once as
  // pending, until its ack (matched by key) marks it sent.
  const entry = { key: newKey(), text, room: state.room, nickname: state.me ?? state.nick ?? 'you', ts: Date.now(), sent: false };
  state.outbox.push(entry);
  saveOutbox();
  const item = pendingItem(entry);
  insert(item);
  if (ready() && state.retryTimer === null) transmit([entry], true);
  ui.sendError.textContent = '';
  item.scrollIntoView({ block: 'nearest' });
  ui.text.value = '';
});

ui.nickForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const nick = ui.nick.value.trim();
  if (nick && send('nickname', nick)) ui.nickError.textContent = '';
});

ui.roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  // Joining the room we are in would only make the others see us leave and come back.
  if (room === state.room) ui.room.value = '';
  else if (room && send('join', room)) {
    ui.roomError.textContent = '';
    ui.room.value = '';
  }
});

// What was typed before a reload shows at once, in the room we are about to rejoin.
ui.roomName.textContent = state.room;
showPending(state.room);
connect();
