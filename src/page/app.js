// The wschat client: plain DOM and one WebSocket, no dependencies.
//
// Every piece of text from the network goes in through textContent, never innerHTML, so a message
// like <img src=x onerror=alert(1)> shows literally (the CSP would block it anyway: defence in depth).
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  roomName: $('room-name'),
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

const state = {
  ws: null,
  greeted: false, // this connection got its first `welcome`
  attempt: 0, // connection attempts since the last one that reached `welcome`
  nick: null, // the nickname the server last confirmed for the user's choice; restored on reconnect
  me: null, // our nickname right now, as the server knows it
  room: 'lobby', // our room; rejoined on reconnect
  shownRoom: null, // the room whose messages are on screen
  online: new Set(),
  seen: new Map(), // message id → {nickname, text, ts?} of every message on screen, for dedup
  lastId: 0, // newest message id on screen, to resume from
  // Requests awaiting their reply, oldest first. The server answers each request with exactly one
  // message (ack, renamed, welcome, history or error) in order, and `error` does not say which
  // request it is about: this queue does.
  inflight: [],
};

// ---- connection ----

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}`);
  state.ws = ws;
  state.greeted = false;
  state.inflight = [];
  setStatus(everOnline() ? 'reconnecting' : 'connecting');
  ws.addEventListener('message', (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return; // Not ours to fix: ignore rather than break the page.
    }
    const handler = handlers[msg?.type];
    if (handler) handler(msg.payload ?? {});
  });
  // `error` is always followed by `close`, so only `close` needs handling.
  ws.addEventListener('close', () => {
    if (state.ws !== ws) return;
    state.ws = null;
    for (const request of state.inflight) {
      if (request.item) markFailed(request.item, 'not confirmed: connection lost');
    }
    state.inflight = [];
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = base * (0.5 + Math.random());
  state.attempt += 1;
  const kind = everOnline() ? 'reconnecting' : 'connecting';
  setStatus(kind, `${kind === 'connecting' ? 'Connecting' : 'Reconnecting'}: retry in ${(delay / 1000).toFixed(1)} s…`);
  setTimeout(connect, delay);
}

function everOnline() {
  return state.me !== null;
}

function isOpen() {
  return state.ws?.readyState === WebSocket.OPEN && state.greeted;
}

/** Sends a request and remembers it until its reply; `item` is a message's list entry. */
function send(type, payload, item = null) {
  if (!isOpen()) return false;
  state.ws.send(JSON.stringify({ type, payload }));
  state.inflight.push({ type, item });
  return true;
}

/** The oldest pending request of `type`, removed from the queue. */
function takeReply(type) {
  const i = state.inflight.findIndex((request) => request.type === type);
  return i < 0 ? null : state.inflight.splice(i, 1)[0];
}

function setStatus(kind, label) {
  const labels = { connecting: 'Connecting…', online: 'Online', reconnecting: 'Reconnecting…' };
  ui.status.dataset.state = kind;
  ui.status.textContent = label ?? labels[kind];
  // Nothing can be sent while offline; say so by disabling the buttons rather than failing later.
  for (const button of document.querySelectorAll('form button')) button.disabled = kind !== 'online';
}

// ---- server messages ----

const handlers = {
  welcome(p) {
    state.me = p.nickname;
    if (!state.greeted) {
      // The server greets every connection in the lobby under a fresh name: after a reconnect,
      // put back the user's nickname and room.
      state.greeted = true;
      state.attempt = 0;
      setStatus('online');
      if (state.nick !== null && state.nick !== p.nickname) send('nickname', state.nick);
      if (state.room !== p.room) {
        send('join', state.room);
        return; // Its own welcome will fill the screen.
      }
    } else {
      takeReply('join');
      ui.roomError.textContent = '';
    }
    enterRoom(p);
  },

  message(p) {
    if (p.room === state.shownRoom) addMessage(p);
  },

  ack(p) {
    const request = takeReply('message');
    if (!request) return;
    const { item } = request;
    item.classList.replace('pending', 'sent');
    item.querySelector('.state').textContent = 'sent';
    remember(p.id, { nickname: item.dataset.nickname, text: item.dataset.text });
    item.dataset.id = p.id;
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

  renamed(p) {
    if (p.from === state.me) {
      // Our own rename, confirmed.
      takeReply('nickname');
      state.me = state.nick = p.to;
      ui.nickError.textContent = '';
    }
    if (p.room !== state.shownRoom) return;
    state.online.delete(p.from);
    state.online.add(p.to);
    renderOnline();
    if (p.from !== p.to) addNote(`${p.from} is now ${p.to}`);
  },

  history(p) {
    takeReply('history');
    if (p.room === state.shownRoom) p.messages.forEach(addMessage);
  },

  error(p) {
    // Errors answer the oldest request (see `inflight`); the rate limit answers any of them.
    const request = state.inflight.shift();
    const text = describeError(p);
    if (request?.type === 'nickname') ui.nickError.textContent = text;
    else if (request?.type === 'join') ui.roomError.textContent = text;
    else if (request?.item) markFailed(request.item, text);
    else ui.sendError.textContent = text;
  },
};

function describeError({ code, message }) {
  const friendly = {
    nickname_taken: 'That nickname is taken.',
    rate_limited: 'Too fast: wait a moment.',
    too_long: 'Too long.',
  };
  return friendly[code] ?? message ?? String(code);
}

/** Shows the room of a `welcome`: its people and history. */
function enterRoom(p) {
  const sameRoom = p.room === state.shownRoom;
  if (!sameRoom) {
    ui.messages.replaceChildren();
    forgetMessages();
    state.shownRoom = p.room;
  } else if (serverForgot(p.history)) {
    // Message ids start again from 1 after a server restart; keep what is on screen but stop
    // treating those ids as seen, or new messages would be dropped as duplicates.
    addNote('The server restarted; the messages above are no longer kept there.');
    forgetMessages();
  }
  state.room = p.room;
  ui.roomName.textContent = p.room;
  state.online = new Set(p.online);
  renderOnline();
  p.history.forEach(addMessage);
  // Back in a room we were showing: ask for whatever we missed while away.
  if (sameRoom) send('history', { since: state.lastId });
}

/** True when the server's history contradicts what we saw: it lost its memory (restarted). */
function serverForgot(history) {
  const newest = history.length ? history[history.length - 1].id : 0;
  const differs = (m) => {
    const known = state.seen.get(m.id);
    if (!known) return false;
    return known.ts !== undefined ? known.ts !== m.ts : known.text !== m.text || known.nickname !== m.nickname;
  };
  return newest < state.lastId || history.some(differs);
}

function forgetMessages() {
  state.seen.clear();
  state.lastId = 0;
}

function remember(id, message) {
  state.seen.set(id, message);
  state.lastId = Math.max(state.lastId, id);
}

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
  const item = messageItem(m.nickname, m.text, m.ts, m.nickname === state.me);
  item.dataset.id = m.id;
  if (item.classList.contains('mine')) {
    item.classList.add('sent');
    item.querySelector('.state').textContent = 'sent';
  }
  append(item);
}

function addNote(text) {
  append(el('li', 'note', text));
}

function markFailed(item, reason) {
  item.classList.replace('pending', 'failed');
  item.querySelector('.state').textContent = reason;
}

/** Appends to the list, following the bottom unless the reader scrolled up. */
function append(item) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
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
  // Shown at once as pending; the ack (matched by order) marks it sent.
  const item = messageItem(state.me, text, Date.now(), true);
  item.classList.add('pending');
  if (!send('message', text, item)) return;
  item.querySelector('.state').textContent = 'sending…';
  ui.sendError.textContent = '';
  append(item);
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

connect();
