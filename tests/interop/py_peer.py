"""Python `websockets` (pinned in requirements.txt) as wschat's peer, compression on. Run by run.sh.

    py_peer.py echo-client URL MESSAGES REPORT    send every echo message, require it back exactly
    py_peer.py chat-client URL MESSAGES REPORT    as "py": chat with "node", require its messages
    py_peer.py echo-server                        echo on a free loopback port until SIGTERM

The clients fail unless the server accepted permessage-deflate, as websockets itself saw the
handshake, and write REPORT (JSON): the extension and the byte lengths of the messages that went
each way, which check_trace.py holds against wschat's wire trace. websockets compresses every
message once the extension is agreed (it has no threshold).
"""

import asyncio
import json
import signal
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import PerMessageDeflate

# Every wait is bounded: a peer that stops answering fails the run in seconds.
WAIT_S = 10
# Above the largest fixture (61 KB) and wschat's 64 KiB default limit.
MAX_SIZE = 1 << 20
NICK, PEER = "py", "node"


def build(message):
    """A fixture entry as what goes on the wire: str for text, bytes for binary."""
    if "unit_hex" in message:
        return bytes.fromhex(message["unit_hex"]) * message["repeat"]
    return message["unit"] * message["repeat"]


def wire_len(data):
    return len(data.encode() if isinstance(data, str) else data)


def kind(data):
    return "text" if isinstance(data, str) else "binary"


def negotiated(ws, header):
    """The permessage-deflate agreement as websockets sees it; fails the run without one."""
    if not any(isinstance(ext, PerMessageDeflate) for ext in ws.protocol.extensions):
        sys.exit(f"py_peer: permessage-deflate not in effect (Sec-WebSocket-Extensions: {header!r})")
    return header


async def recv(ws, what):
    try:
        return await asyncio.wait_for(ws.recv(), WAIT_S)
    except asyncio.TimeoutError:
        sys.exit(f"py_peer: no {what} within {WAIT_S} s")


def write_report(path, extension, sent, received):
    report = {
        "library": f"websockets {websockets.__version__}",
        "extension": extension,
        "sent": [{"type": kind(m), "len": wire_len(m)} for m in sent],
        "received": [{"type": kind(m), "len": wire_len(m)} for m in received],
    }
    with open(path, "w") as out:
        json.dump(report, out, indent=1)


async def echo_client(url, messages_path, report_path):
    with open(messages_path) as f:
        fixtures = json.load(f)["echo"]
    async with connect(url, compression="deflate", max_size=MAX_SIZE, open_timeout=WAIT_S) as ws:
        extension = negotiated(ws, ws.response.headers.get("Sec-WebSocket-Extensions"))
        sent, received = [], []
        for fixture in fixtures:
            message = build(fixture)
            await ws.send(message)
            sent.append(message)
            echo = await recv(ws, f"echo of {fixture['name']}")
            received.append(echo)
            if echo != message:
                sys.exit(f"py_peer: {fixture['name']}: echo differs ({kind(echo)} of {wire_len(echo)} bytes)")
        print(f"py_peer: {len(sent)} messages echoed exactly; extension: {extension}")
    write_report(report_path, extension, sent, received)


def chat_request(text):
    return json.dumps({"type": "message", "payload": text}, ensure_ascii=False, separators=(",", ":"))


async def chat_client(url, messages_path, report_path):
    """Joins as NICK, waits for PEER to be online, says its lines, and waits until it has its acks
    and PEER's lines (the chat protocol in the README)."""
    with open(messages_path) as f:
        chat = json.load(f)["chat"]
    mine = [build(m) for m in chat[NICK]]
    theirs = [build(m) for m in chat[PEER]]
    async with connect(url, compression="deflate", max_size=MAX_SIZE, open_timeout=WAIT_S) as ws:
        extension = negotiated(ws, ws.response.headers.get("Sec-WebSocket-Extensions"))
        online, sent, received, heard, acks = set(), [], [], [], 0
        await ws.send(json.dumps({"type": "nickname", "payload": NICK}))
        said = False
        while len(heard) < len(theirs) or acks < len(mine):
            raw = await recv(ws, f"chat event (heard {len(heard)} of {PEER}, {acks} acks)")
            event = json.loads(raw)
            kind_, payload = event["type"], event["payload"]
            if kind_ == "welcome":
                online = set(payload["online"])
            elif kind_ == "joined":
                online.add(payload["nickname"])
            elif kind_ == "left":
                online.discard(payload["nickname"])
            elif kind_ == "renamed":
                online.discard(payload["from"])
                online.add(payload["to"])
            elif kind_ == "ack":
                acks += 1
            elif kind_ == "message":
                received.append(raw)
                heard.append((payload["nickname"], payload["text"]))
            elif kind_ == "error":
                sys.exit(f"py_peer: the server answered an error: {payload}")
            if not said and {NICK, PEER} <= online:
                for text in mine:
                    request = chat_request(text)
                    await ws.send(request)
                    sent.append(request)
                said = True
        if heard != [(PEER, text) for text in theirs]:
            sys.exit(f"py_peer: heard {[(n, len(t)) for n, t in heard]}, not {PEER}'s lines")
        print(f"py_peer: heard {PEER}'s {len(heard)} messages, {acks} of ours acked; extension: {extension}")
    write_report(report_path, extension, sent, received)


async def echo_server():
    async def echo(ws):
        header = ws.response.headers.get("Sec-WebSocket-Extensions")
        deflate = any(isinstance(ext, PerMessageDeflate) for ext in ws.protocol.extensions)
        print(f"py_peer: connection, permessage-deflate {'on' if deflate else 'OFF'}: {header}", flush=True)
        async for message in ws:
            await ws.send(message)

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, "127.0.0.1", 0, compression="deflate", max_size=MAX_SIZE) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"py_peer: websockets {websockets.__version__} listening on {port}", flush=True)
        await stop


def main(argv):
    commands = {"echo-client": echo_client, "chat-client": chat_client, "echo-server": echo_server}
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    asyncio.run(commands[argv[1]](*argv[2:]))


if __name__ == "__main__":
    main(sys.argv)
