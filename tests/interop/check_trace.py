"""Holds wschat's wire trace (`--trace`, see src/trace.rs) against what should have crossed the wire.

    check_trace.py echo TRACE --messages MESSAGES [--text-only] --ours BYTES --peer BYTES
    check_trace.py chat TRACE --ours BYTES --client NICK REPORT BYTES [--client ...]

TRACE is what wschat or wschat-client printed with --trace: `<-` is what the peer sent, `->` what
we sent; the first frame of a compressed message has RSV1 (RSV=100) and shows its inflated length.
--ours and --peer are the sizes from which each side compresses (wschat's --deflate-threshold; 0 for
Python websockets and Node ws, which compress every message here).

echo: the trace has one WebSocket connection; its 101 accepted permessage-deflate; the peer sent
exactly the fixtures of MESSAGES (type and length, in order) and we sent them back, each
compressed exactly when it reaches the sender's threshold.

chat: for each client, found by the nickname it chose: its 101 accepted permessage-deflate; the
`message` requests it sent are those in its REPORT (py_peer.py/node_peer.mjs), compressed from
its threshold on; the `message` events the server sent it are those it reports receiving, byte
for byte in length, compressed from --ours on.

Both also require at least one compressed message each way and no protocol failure (`!!`) in
the trace. Exit status 0 when every check holds; the tables printed show each message.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass, field

FRAME = re.compile(
    r"#(?P<conn>\d+) (?P<dir><-|->) (?P<fin>FIN|\.\.\.) RSV=(?P<rsv>[01]{3}) (?P<op>[A-Z]+) +"
    r"MASK=\S+ +len=(?P<len>\d+) +\((?:7|16|64)-bit\) +"
    r"(?:compressed, inflated len=(?P<inflated>\d+) )?(?P<preview>.*)$"
)
HEAD = re.compile(r"#(?P<conn>\d+) (?P<dir><-|->) (?P<text>.*)$")
FAILURE = re.compile(r"#\d+ !! ")
DATA = {"TEXT": "text", "BINARY": "binary"}


@dataclass
class Message:
    """A data message as the trace shows it: its frames put together."""

    type: str
    compressed: bool
    wire_len: int
    len: int
    preview: str

    def show(self):
        how = f"compressed, {self.wire_len:>5} B on the wire" if self.compressed else "plain"
        return f"{self.type:<6} {self.len:>6} B  {how}"


@dataclass
class Connection:
    heads: dict = field(default_factory=lambda: {"<-": [], "->": []})
    messages: dict = field(default_factory=lambda: {"<-": [], "->": []})
    # The message each direction is in the middle of (fragmented), if any.
    open: dict = field(default_factory=dict)

    def frame(self, m):
        direction, op = m["dir"], m["op"]
        wire_len = int(m["len"])
        length = int(m["inflated"]) if m["inflated"] is not None else wire_len
        if m["rsv"][1:] != "00":
            raise Failure(f"a frame with RSV2/RSV3 set: {m.string}")
        if op in DATA:
            if direction in self.open:
                raise Failure(f"a new message inside a fragmented one: {m.string}")
            self.open[direction] = Message(DATA[op], m["rsv"] == "100", wire_len, length, m["preview"])
        elif op == "CONT":
            message = self.open.get(direction)
            if message is None:
                raise Failure(f"a continuation frame outside a message: {m.string}")
            if m["rsv"] != "000":
                raise Failure(f"RSV1 on a continuation frame (RFC 7692 §6.1 sets it on the first only): {m.string}")
            message.wire_len += wire_len
            message.len += length
        else:
            return  # control frames: never compressed, and the FAILURE check covers them
        if m["fin"] == "FIN":
            self.messages[direction].append(self.open.pop(direction))

    def response(self):
        """The 101's direction and header lines; fails if there is none."""
        for direction, lines in self.heads.items():
            for i, line in enumerate(lines):
                if line.startswith("HTTP/1.1 101 "):
                    return direction, lines[i:]
        raise Failure("no 101 Switching Protocols")


class Failure(Exception):
    pass


def parse(path):
    connections = {}
    with open(path, encoding="utf-8", errors="replace") as trace:
        for line in trace:
            line = line.rstrip("\n")
            if FAILURE.match(line):
                raise Failure(f"the trace shows a protocol failure: {line}")
            m = FRAME.match(line) or HEAD.match(line)
            if m is None:
                continue  # a log line, or a state change (`==`)
            conn = connections.setdefault(int(m["conn"]), Connection())
            if "op" in m.groupdict():
                conn.frame(m)
            else:
                conn.heads[m["dir"]].append(m["text"])
    return connections


def unquote(preview):
    """The bytes a trace preview (src/trace.rs `quote`) shows; None for a hex or cut preview."""
    if len(preview) < 2 or not (preview.startswith('"') and preview.endswith('"')):
        return None
    out, body, i = bytearray(), preview[1:-1], 0
    simple = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0", "'": "'"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
        elif body[i + 1] in simple:
            out += simple[body[i + 1]].encode()
            i += 2
        elif body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:  # \u{...}
            end = body.index("}", i)
            out += chr(int(body[i + 3 : end], 16)).encode()
            i = end + 1
    return bytes(out)


def deflate_accepted(conn, label):
    direction, lines = conn.response()
    values = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-extensions:")]
    if not any(v.lower().startswith("permessage-deflate") for v in values):
        raise Failure(f"{label}: the 101 does not accept permessage-deflate (Sec-WebSocket-Extensions: {values})")
    print(f"  {label}: 101 {direction} Sec-WebSocket-Extensions: {'; '.join(values)}")


def expect(got, want, threshold, label):
    """`got` (trace messages) must be `want` ((type, len) pairs) in order, each compressed exactly
    when its length reaches `threshold`."""
    print(f"  {label} (compressed from {threshold} B on):")
    problems = []
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        verdict = "ok"
        if g is None:
            verdict = f"MISSING {w[0]} of {w[1]} B"
        elif w is None:
            verdict = "UNEXPECTED"
        elif (g.type, g.len) != w:
            verdict = f"WRONG: expected {w[0]} of {w[1]} B"
        elif g.compressed != (g.len >= threshold):
            verdict = f"WRONG: should be {'compressed' if g.len >= threshold else 'plain'}"
        if verdict != "ok":
            problems.append(f"{label} #{i + 1}: {verdict}")
        print(f"    {i + 1:>2}. {g.show() if g else '-':<48} {verdict}")
    if not any(m.compressed for m in got):
        problems.append(f"{label}: no compressed message at all")
    return problems


def fixture(m):
    if "unit_hex" in m:
        return ("binary", len(bytes.fromhex(m["unit_hex"])) * m["repeat"])
    return ("text", len(m["unit"].encode()) * m["repeat"])


def check_echo(args, connections):
    with open(args.messages) as f:
        fixtures = [m for m in json.load(f)["echo"] if not (args.text_only and "unit_hex" in m)]
    want = [fixture(m) for m in fixtures]
    websockets = [(n, c) for n, c in connections.items() if any(l.startswith("HTTP/1.1 101 ") for h in c.heads.values() for l in h)]
    if len(websockets) != 1:
        raise Failure(f"expected one WebSocket connection in the trace, found {len(websockets)}")
    n, conn = websockets[0]
    deflate_accepted(conn, f"#{n}")
    return expect(conn.messages["<-"], want, args.peer, f"#{n} <- from the peer") + expect(
        conn.messages["->"], want, args.ours, f"#{n} -> from wschat"
    )


def is_chat_message(message):
    return message.preview.startswith('"{\\"type\\":\\"message\\"')


def nickname_of(conn):
    for message in conn.messages["<-"]:
        raw = unquote(message.preview)
        try:
            request = json.loads(raw) if raw is not None else None
        except ValueError:
            continue
        if isinstance(request, dict) and request.get("type") == "nickname":
            return request.get("payload")
    return None


def check_chat(args, connections):
    by_nick = {nickname_of(conn): (n, conn) for n, conn in connections.items()}
    problems = []
    for nick, report_path, threshold in args.client:
        if nick not in by_nick:
            raise Failure(f"no connection chose the nickname {nick!r}")
        n, conn = by_nick[nick]
        with open(report_path) as f:
            report = json.load(f)
        print(f"  #{n} is {nick} ({report['library']}, which saw Sec-WebSocket-Extensions: {report['extension']})")
        deflate_accepted(conn, f"#{n}")
        lens = lambda key: [(m["type"], m["len"]) for m in report[key]]
        sent = [m for m in conn.messages["<-"] if is_chat_message(m)]
        received = [m for m in conn.messages["->"] if is_chat_message(m)]
        problems += expect(sent, lens("sent"), int(threshold), f"#{n} <- {nick}'s message requests")
        problems += expect(received, lens("received"), args.ours, f"#{n} -> message events to {nick}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("trace")
    echo.add_argument("--messages", required=True)
    echo.add_argument("--text-only", action="store_true")
    echo.add_argument("--ours", type=int, required=True)
    echo.add_argument("--peer", type=int, required=True)
    chat = sub.add_parser("chat")
    chat.add_argument("trace")
    chat.add_argument("--ours", type=int, required=True)
    chat.add_argument("--client", nargs=3, action="append", required=True, metavar=("NICK", "REPORT", "BYTES"))
    args = parser.parse_args()
    try:
        connections = parse(args.trace)
        problems = (check_echo if args.mode == "echo" else check_chat)(args, connections)
    except Failure as failure:
        problems = [str(failure)]
    for problem in problems:
        print(f"check_trace: FAIL: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
