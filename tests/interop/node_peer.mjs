// Node `ws` (pinned in package.json) as wschat's peer, perMessageDeflate on. Run by run.sh.
//
//   node_peer.mjs echo-client URL MESSAGES REPORT   send every echo message, require it back exactly
//   node_peer.mjs chat-client URL MESSAGES REPORT   as "node": chat with "py", require its messages
//   node_peer.mjs echo-server                       echo on a free loopback port until SIGTERM
//
// The clients fail unless the server accepted permessage-deflate, as ws itself saw the handshake,
// and write REPORT (JSON): the extension and the byte lengths of the messages that went each way,
// which check_trace.py holds against wschat's wire trace. ws compresses every message here: its
// `threshold` (1024 bytes) applies only where its own context takeover is off, and wschat does not
// ask for that.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import WebSocket, { WebSocketServer } from 'ws';

const VERSION = createRequire(import.meta.url)('ws/package.json').version;
// Every wait is bounded: a peer that stops answering fails the run in seconds.
const WAIT_MS = 10_000;
// Above the largest fixture (61 KB) and wschat's 64 KiB default limit.
const MAX_PAYLOAD = 1 << 20;
const [NICK, PEER] = ['node', 'py'];

const fail = (why) => {
  console.error(`node_peer: ${why}`);
  process.exit(1);
};

/** A fixture entry as what goes on the wire: a string for text, a Buffer for binary. */
const build = (m) => ('unit_hex' in m ? Buffer.from(m.unit_hex.repeat(m.repeat), 'hex') : m.unit.repeat(m.repeat));
const kind = (data) => (typeof data === 'string' ? 'text' : 'binary');
const wireLen = (data) => Buffer.byteLength(data);

/** Opens a client with compression on; resolves once open with the 101's extension header. */
function open(url) {
  const ws = new WebSocket(url, { perMessageDeflate: true, handshakeTimeout: WAIT_MS, maxPayload: MAX_PAYLOAD });
  let header;
  ws.on('upgrade', (response) => (header = response.headers['sec-websocket-extensions']));
  // Messages wait here until next() takes them, so none is lost between two awaits.
  const inbox = [];
  let waiter;
  ws.on('message', (data, isBinary) => {
    inbox.push(isBinary ? data : data.toString('utf8'));
    waiter?.();
  });
  ws.on('close', (code) => waiter?.(new Error(`closed with ${code}`)));
  const next = (what) =>
    new Promise((resolve, reject) => {
      const take = (error) => {
        clearTimeout(timer);
        waiter = undefined;
        if (inbox.length) resolve(inbox.shift());
        else reject(error ?? new Error(`no ${what}`));
      };
      const timer = setTimeout(() => take(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
      if (inbox.length) take();
      else waiter = take;
    });
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      // ws's own view of the agreement: the extensions it put in effect.
      if (ws.extensions !== 'permessage-deflate') {
        reject(new Error(`permessage-deflate not in effect (Sec-WebSocket-Extensions: ${header})`));
      } else {
        resolve({ ws, header, next });
      }
    });
    ws.once('error', reject);
  });
}

/** Closes with 1000 and waits (bounded) for the server's Close. */
const close = (ws) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no Close from the server')), WAIT_MS);
    ws.once('close', (code) => {
      clearTimeout(timer);
      code === 1000 ? resolve() : reject(new Error(`closed with ${code}`));
    });
    ws.close(1000);
  });

function writeReport(path, extension, sent, received) {
  const lens = (list) => list.map((m) => ({ type: kind(m), len: wireLen(m) }));
  const report = { library: `ws ${VERSION}`, extension, sent: lens(sent), received: lens(received) };
  writeFileSync(path, JSON.stringify(report, null, 1));
}

async function echoClient(url, messagesPath, reportPath) {
  const fixtures = JSON.parse(readFileSync(messagesPath, 'utf8')).echo;
  const { ws, header, next } = await open(url);
  const [sent, received] = [[], []];
  for (const fixture of fixtures) {
    const message = build(fixture);
    ws.send(message);
    sent.push(message);
    const echo = await next(`echo of ${fixture.name}`);
    received.push(echo);
    const same = kind(echo) === kind(message) && Buffer.from(echo).equals(Buffer.from(message));
    if (!same) fail(`${fixture.name}: echo differs (${kind(echo)} of ${wireLen(echo)} bytes)`);
  }
  await close(ws);
  console.log(`node_peer: ${sent.length} messages echoed exactly; extension: ${header}`);
  writeReport(reportPath, header, sent, received);
}

/** Joins as NICK, waits for PEER to be online, says its lines, and waits until it has its acks
 * and PEER's lines (the chat protocol in the README). */
async function chatClient(url, messagesPath, reportPath) {
  const chat = JSON.parse(readFileSync(messagesPath, 'utf8')).chat;
  const [mine, theirs] = [chat[NICK].map(build), chat[PEER].map(build)];
  const { ws, header, next } = await open(url);
  let online = new Set();
  const [sent, received, heard] = [[], [], []];
  let [acks, said] = [0, false];
  ws.send(JSON.stringify({ type: 'nickname', payload: NICK }));
  while (heard.length < theirs.length || acks < mine.length) {
    const raw = await next(`chat event (heard ${heard.length} of ${PEER}, ${acks} acks)`);
    const { type, payload } = JSON.parse(raw);
    if (type === 'welcome') online = new Set(payload.online);
    else if (type === 'joined') online.add(payload.nickname);
    else if (type === 'left') online.delete(payload.nickname);
    else if (type === 'renamed') {
      online.delete(payload.from);
      online.add(payload.to);
    } else if (type === 'ack') acks++;
    else if (type === 'message') {
      received.push(raw);
      heard.push([payload.nickname, payload.text]);
    } else if (type === 'error') fail(`the server answered an error: ${JSON.stringify(payload)}`);
    if (!said && online.has(NICK) && online.has(PEER)) {
      for (const text of mine) {
        const request = JSON.stringify({ type: 'message', payload: text });
        ws.send(request);
        sent.push(request);
      }
      said = true;
    }
  }
  const expected = theirs.map((text) => [PEER, text]);
  if (JSON.stringify(heard) !== JSON.stringify(expected)) {
    fail(`heard ${JSON.stringify(heard.map(([n, t]) => [n, t.length]))}, not ${PEER}'s lines`);
  }
  await close(ws);
  console.log(`node_peer: heard ${PEER}'s ${heard.length} messages, ${acks} of ours acked; extension: ${header}`);
  writeReport(reportPath, header, sent, received);
}

function echoServer() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true, maxPayload: MAX_PAYLOAD });
  wss.on('listening', () => console.log(`node_peer: ws ${VERSION} listening on ${wss.address().port}`));
  wss.on('connection', (ws, request) => {
    const offer = request.headers['sec-websocket-extensions'];
    console.log(`node_peer: connection, extensions in effect: ${ws.extensions || 'NONE'} (offer: ${offer})`);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  process.on('SIGTERM', () => process.exit(0));
}

const commands = { 'echo-client': echoClient, 'chat-client': chatClient, 'echo-server': echoServer };
const [command, ...args] = process.argv.slice(2);
if (!(command in commands)) fail('usage: node_peer.mjs echo-client|chat-client URL MESSAGES REPORT | echo-server');
try {
  await commands[command](...args);
} catch (error) {
  fail(error.message);
}
