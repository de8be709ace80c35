"""WebSocket clients (Python `websockets`, pinned in requirements.txt) that chat with wschat
through nginx. Run by run.sh.

    client.py chat URL                  two clients, each sees the other's message (each sends a
                                        forged X-Forwarded-For, which nginx must replace)
    client.py idle URL SECONDS open     one client, silent for SECONDS, must still be connected
    client.py idle URL SECONDS cut      the same, and the connection must have been cut
    client.py status URL                prints the statuses of two handshakes, the first held
                                        open during the second (e.g. "101 429")

The clients send no pings of their own (`ping_interval=None`): only wschat's pings may keep the
connection busy enough for nginx's proxy_read_timeout, which is what the idle cases test. They
still answer wschat's pings, as every client does. Every wait is bounded.
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

# Every wait for an answer is bounded: a proxy that swallows messages fails the run in seconds.
WAIT_S = 10
# What the chat clients claim to be (run.sh checks that wschat never sees it).
FORGED_CLIENT = "203.0.113.66"


def log(text):
    print(f"client: {text}", flush=True)


async def next_event(ws, what):
    try:
        raw = await asyncio.wait_for(ws.recv(), WAIT_S)
    except asyncio.TimeoutError:
        sys.exit(f"client: no {what} within {WAIT_S} s")
    event = json.loads(raw)
    if event["type"] == "error":
        sys.exit(f"client: the server answered an error: {event['payload']}")
    return event


async def send(ws, kind, payload):
    await ws.send(json.dumps({"type": kind, "payload": payload}))


async def chatter(url, nick, peer, both_online, heard):
    """Takes `nick`, waits until `peer` is online, says one line, waits for the peer's line."""
    # A forged X-Forwarded-For: nginx, the edge, must replace it with the address it saw.
    forged = {"X-Forwarded-For": FORGED_CLIENT}
    async with connect(url, ping_interval=None, open_timeout=WAIT_S, additional_headers=forged) as ws:
        await send(ws, "nickname", nick)
        online, said, line = set(), False, f"hello from {nick}"
        while True:
            event = await next_event(ws, f"event for {nick}")
            kind, payload = event["type"], event["payload"]
            if kind == "welcome":
                online = set(payload["online"])
            elif kind == "joined":
                online.add(payload["nickname"])
            elif kind == "renamed":
                online.discard(payload["from"])
                online.add(payload["to"])
            elif kind == "message" and payload["nickname"] == peer:
                heard[nick] = payload["text"]
                return
            if not said and {nick, peer} <= online:
                both_online.set()
                await send(ws, "message", line)
                said = True


async def chat(url):
    heard = {}
    both_online = asyncio.Event()
    await asyncio.gather(
        chatter(url, "alice", "bob", both_online, heard),
        chatter(url, "bob", "alice", both_online, heard),
    )
    expected = {"alice": "hello from bob", "bob": "hello from alice"}
    if heard != expected:
        sys.exit(f"client: heard {heard}, expected {expected}")
    log(f"both clients heard each other through {url}")


async def idle(url, seconds, expect):
    seconds = float(seconds)
    async with connect(url, ping_interval=None, open_timeout=WAIT_S) as ws:
        await send(ws, "nickname", f"idle-{expect}")
        t0 = time.monotonic()
        cut_after = None
        try:
            # Read (and so answer pings) without sending anything until the time is up.
            while (left := seconds - (time.monotonic() - t0)) > 0:
                try:
                    await asyncio.wait_for(ws.recv(), left)
                except asyncio.TimeoutError:
                    break
            await send(ws, "message", "still here")
            while (await next_event(ws, "ack after the silence"))["type"] != "ack":
                pass
        except ConnectionClosed as closed:
            cut_after = time.monotonic() - t0
            log(f"connection cut after {cut_after:.1f} s of silence ({closed})")
    if expect == "open" and cut_after is not None:
        sys.exit(f"client: the connection was cut after {cut_after:.1f} s; it should have lived {seconds} s")
    if expect == "cut" and cut_after is None:
        sys.exit(f"client: the connection survived {seconds} s of silence; it should have been cut")
    if expect == "open":
        log(f"connection alive after {seconds} s of silence, message acknowledged")


async def handshake_status(url):
    """The HTTP status of a WebSocket handshake to `url`, and the connection if it opened."""
    try:
        ws = await connect(url, ping_interval=None, open_timeout=WAIT_S)
    except InvalidStatus as refused:
        return refused.response.status_code, None
    return 101, ws


async def status(url):
    """Prints the statuses of two handshakes, the first held open while the second is made."""
    first, held = await handshake_status(url)
    second, extra = await handshake_status(url)
    for ws in (held, extra):
        if ws is not None:
            await ws.close()
    print(first, second)


def main(argv):
    commands = {"chat": chat, "idle": idle, "status": status}
    if len(argv) < 3 or argv[1] not in commands:
        sys.exit(__doc__)
    asyncio.run(commands[argv[1]](*argv[2:]))


if __name__ == "__main__":
    main(sys.argv)
