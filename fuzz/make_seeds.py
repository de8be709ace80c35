#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/corpus/<target>/seed_*). Rerun after changing it."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(opcode, payload=b"", fin=True, masked=True, rsv=0):
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if masked:
        head += KEY
        payload = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return head + payload


def close(code, reason=b""):
    return frame(0x8, struct.pack(">H", code) + reason)


def with_cuts(stream, cuts):
    """The connection/utf8 input format: count, little-endian u16 cut points, stream."""
    return bytes([len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + stream


FRAMES = {
    "text": frame(0x1, b"Hello"),
    "binary_16bit": frame(0x2, bytes(range(256)) * 2),
    "binary_64bit": frame(0x2, b"\xab" * 70000)[:64],
    "ping": frame(0x9, b"are you there"),
    "pong": frame(0xA, b""),
    "close_1000": close(1000, b"bye"),
    "close_empty": frame(0x8),
    "unmasked_rfc_hello": bytes([0x81, 0x05]) + b"Hello",
    "fragmented": frame(0x1, b"Hel", fin=False) + frame(0x0, b"lo"),
    "reserved_opcode": frame(0x3, b"x"),
    "rsv_bits": frame(0x1, b"x", rsv=4),
}

SESSIONS = {
    "echo_then_close": frame(0x1, "κόσμε".encode()) + frame(0x2, b"\x00\x01") + close(1000),
    "fragments_with_ping": frame(0x1, b"frag", fin=False) + frame(0x9, b"p")
    + frame(0x0, b"ment", fin=False) + frame(0x0, b"s") + close(1001, b"going"),
    "invalid_utf8": frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"),
    "close_codes": close(3000) + close(4999) + close(1005),
    "close_bad_reason": frame(0x8, b"\x03\xe8\xff"),
    "unmasked": bytes([0x81, 0x02]) + b"hi",
    "too_big": frame(0x2, b"\x00" * 2000),
    "many_fragments": b"".join(frame(0x0 if i else 0x2, b"x", fin=(i == 19)) for i in range(20)),
}

HANDSHAKES = {
    "chrome": (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
        "Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n"
        "Origin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\n"
        "Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    ),
    "firefox": (
        "GET /echo HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; "
        "rv:140.0) Gecko/20100101 Firefox/140.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\n"
        "Accept-Encoding: gzip, deflate, br, zstd\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: http://localhost:8080\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-Fetch-Dest: empty\r\nSec-Fetch-Mode: websocket\r\n"
        "Sec-Fetch-Site: same-origin\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\n\r\n"
    ),
    "safari": (
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: chat.example\r\n"
        "Origin: http://allowed.example\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
        "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.0 Safari/605.1.15\r\n\r\n"
    ),
    "wrong_version": "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    "plain_get": "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
    "post": "POST /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
}

UPGRADE_ECHO = HANDSHAKES["firefox"]
UPGRADE_CHAT = HANDSHAKES["chrome"]
STACK = {
    "page_then_echo": ("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /app.js HTTP/1.1\r\nHost: a\r\n\r\n"
                       + UPGRADE_ECHO).encode() + SESSIONS["echo_then_close"],
    "chat": UPGRADE_CHAT.encode() + frame(0x1, b'{"type":"nickname","payload":"alice"}')
    + frame(0x1, b'{"type":"message","payload":"hello"}') + frame(0x1, b'{"type":"join","payload":"rust"}')
    + frame(0x2, b"binary") + close(1000),
    "pipelined_then_close": b"GET /style.css HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "body_refused": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
}

# permessage-deflate (RFC 7692 §7.2.3): compressed client messages. The connection_deflate input
# is one byte choosing the agreement (see wschat::fuzzing::deflate_from), then the connection's.
HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])


def deflated(data):
    """A message payload as RFC 7692 §7.2.1 makes it: raw DEFLATE, sync flush, tail removed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


DEFLATE_SESSIONS = {
    "hello": frame(0x1, HELLO, rsv=4),
    "hello_fragments": frame(0x1, HELLO[:3], fin=False, rsv=4) + frame(0x0, HELLO[3:]),
    "context_takeover": frame(0x1, HELLO, rsv=4) + frame(0x1, bytes([0xF2, 0x00, 0x11, 0x00, 0x00]), rsv=4),
    "stored_block": frame(0x2, bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello" + b"\x00", rsv=4),
    "bfinal": frame(0x1, bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]), rsv=4),
    "empty": frame(0x1, b"\x00", rsv=4) + close(1000),
    "bomb": frame(0x2, deflated(b"\x00" * 100000), rsv=4),
    "long_text": frame(0x1, deflated("κόσμε, chat line ".encode() * 40), rsv=4),
    "rsv1_on_ping": frame(0x9, b"p", rsv=4),
    "rsv1_on_continuation": frame(0x1, HELLO[:3], fin=False, rsv=4) + frame(0x0, HELLO[3:], rsv=4),
    "plain_then_compressed": frame(0x1, b"plain") + frame(0x1, HELLO, rsv=4),
}

EXTENSIONS = {
    "chrome": "permessage-deflate; client_max_window_bits",
    "firefox": "permessage-deflate",
    "autobahn_13_7": "permessage-deflate; client_no_context_takeover; client_max_window_bits; "
    "server_no_context_takeover; server_max_window_bits=8, permessage-deflate; "
    "client_no_context_takeover; client_max_window_bits; server_no_context_takeover, permessage-deflate",
    "rfc_7_1_3": "permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
    "permessage-deflate; client_max_window_bits",
    "quoted_two_lines": 'permessage-deflate; server_max_window_bits="12"\nx-webkit-deflate-frame',
    "answer": "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
    "bad_params": "permessage-deflate; server_max_window_bits=08; mux, permessage-deflate; a=\"b c\"",
}

UTF8 = {
    "greek": "κόσμε".encode(),
    "emoji": "chat 🌍 𝄞".encode(),
    "surrogate": b"\xed\xa0\x80",
    "overlong": b"\xc0\xaf",
    "above_max": b"\xf4\x90\x80\x80",
    "truncated": b"ok\xf0\x9f\x98",
}


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed_" + name), "wb") as f:
        f.write(data)


for name, data in FRAMES.items():
    write("frame", name, data)
for name, data in {**FRAMES, **SESSIONS}.items():
    write("connection", name, with_cuts(data, []))
    write("connection", name + "_split", with_cuts(data, [1, 3, 7, len(data) // 2]))
for name, text in HANDSHAKES.items():
    write("handshake", name, text.encode())
for name, data in DEFLATE_SESSIONS.items():
    for flags in (0x80, 0x1F):
        write("connection_deflate", "%s_%02x" % (name, flags), bytes([flags]) + with_cuts(data, []))
    write("connection_deflate", name + "_split", bytes([0x80]) + with_cuts(data, [1, 3, 7, len(data) // 2]))
for name, text in EXTENSIONS.items():
    write("extensions", name, text.encode())
for name, data in UTF8.items():
    write("utf8", name, with_cuts(data, [1, 2, len(data) - 1]))
for name, data in STACK.items():
    write("stack", name, with_cuts(data, []))
    write("stack", name + "_split", with_cuts(data, [1, 5, 40, len(data) // 2, len(data) - 3]))
