// Echo server on Node's `ws`, as in ws's README ("Simple server" / echo): every text and binary
// message goes back to its sender, pings are answered by ws itself (autoPong), closes by its
// closing handshake. Any path. permessage-deflate off (the ws server default; said explicitly).
// ws sets TCP_NODELAY on every socket itself (WebSocket#setSocket calls socket.setNoDelay()).
//
// Usage: node server.js PORT   (listens on 127.0.0.1:PORT)
'use strict';

const { WebSocketServer } = require('ws');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => console.error(`ws-echo listening on 127.0.0.1:${port}`));

process.on('SIGTERM', () => process.exit(0));
