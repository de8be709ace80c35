// Echo server on Node's `ws`, as in ws's README ("Simple server" / echo): every text and binary
// message goes back to its sender, pings are answered by ws itself (autoPong), closes by its
// closing handshake. Any path. permessage-deflate off (the ws server default; said explicitly),
// or, with the argument `deflate`, `perMessageDeflate: true`, i.e. ws's defaults for it: messages of
// 1024 bytes or more are compressed, the compression context is kept across messages unless the
// client asks otherwise, zlib's level and memory are Node's defaults, and at most 10 zlib jobs run
// at once (on libuv's thread pool, counted in the process's CPU time).
// ws sets TCP_NODELAY on every socket itself (WebSocket#setSocket calls socket.setNoDelay()).
//
// Usage: node server.js PORT [deflate]   (listens on 127.0.0.1:PORT)
'use strict';

const { WebSocketServer } = require('ws');

const port = Number(process.argv[2]);
const mode = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || (mode !== undefined && mode !== 'deflate')) {
  console.error('usage: node server.js PORT [deflate]');
  process.exit(2);
}
const perMessageDeflate = mode === 'deflate';

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => console.error(`ws-echo listening on 127.0.0.1:${port}, perMessageDeflate: ${perMessageDeflate}`));

process.on('SIGTERM', () => process.exit(0));
