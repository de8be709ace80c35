"""wschat over TLS, from Python's ssl module and the `websockets` library (run through run.sh).

Each check is one rule of the TLS issue; the last line says how many passed and failed. The server
was started by run.sh with --tls-cert/--tls-key pointing at LIVE_CERT/LIVE_KEY (copies of
PKI/server*.pem), --echo, --handshake-timeout 2 and wschat's debug log on.

    check.py ADDR PKI_DIR LIVE_CERT LIVE_KEY SERVER_LOG SERVER_PID WSCHAT_BIN
"""

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback

from websockets.sync.client import connect

ADDR, PKI, LIVE_CERT, LIVE_KEY, LOG, PID, BIN = sys.argv[1:8]
HOST, PORT = ADDR.rsplit(":", 1)
PORT = int(PORT)
# What any single wait may take before the check fails.
WAIT = 10.0


def context():
    """A client context that trusts only the test CA (hostname checks on)."""
    return ssl.create_default_context(cafile=os.path.join(PKI, "ca.pem"))


def wss(path="/echo", **options):
    return connect(f"wss://{HOST}:{PORT}{path}", ssl=context(), open_timeout=WAIT, max_size=None, **options)


def der(name):
    with open(os.path.join(PKI, name)) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def presented(ws):
    return ws.socket.getpeercert(binary_form=True)


def echo(ws, message):
    ws.send(message)
    got = ws.recv(timeout=WAIT)
    assert got == message, f"echoed {got[:40]!r}..., sent {message[:40]!r}..."


def log_lines_after(offset, needle):
    """Waits for a server log line containing `needle` past byte `offset`; returns it."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(LOG, "rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                if needle in line:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {needle!r}")


def log_size():
    return os.path.getsize(LOG)


def install(cert, key):
    shutil.copyfile(os.path.join(PKI, cert), LIVE_CERT)
    shutil.copyfile(os.path.join(PKI, key), LIVE_KEY)


def sighup_and_wait(needle):
    offset = log_size()
    os.kill(int(PID), signal.SIGHUP)
    return log_lines_after(offset, needle)


# --- the checks -------------------------------------------------------------------------------


def wss_echo_trusting_the_ca():
    with wss() as ws:
        echo(ws, "hello over wss")
        echo(ws, "é" * 20_000)
        echo(ws, os.urandom(60_000))  # under the default 64 KiB message limit
        assert presented(ws) == der("server.pem")


def https_serves_the_page_on_the_same_port():
    conn = http.client.HTTPSConnection(HOST, PORT, context=context(), timeout=WAIT)
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200, response.status
    assert "<html" in body.lower()
    conn.close()


def plain_http_to_the_tls_port_is_dropped_with_a_debug_line():
    offset = log_size()
    with socket.create_connection((HOST, PORT), timeout=WAIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"", f"answered {answer!r}"
    line = log_lines_after(offset, "not TLS")
    assert "DEBUG" in line, line
    with wss() as ws:  # and the server goes on
        echo(ws, "still serving")


def the_handshake_timeout_covers_the_tls_handshake():
    with socket.create_connection((HOST, PORT), timeout=WAIT) as sock:
        # A handshake record header announcing 512 bytes, and then silence.
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00]))
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data == b"", f"got {data!r}"
    # run.sh passes --handshake-timeout 2.
    assert 1.5 <= waited <= 6, f"closed after {waited:.1f} s"


def sighup_serves_a_renewed_certificate_and_keeps_open_connections():
    with wss() as old:
        assert presented(old) == der("server.pem")
        install("renewed.pem", "renewed-key.pem")
        sighup_and_wait("SIGHUP: reloaded TLS certificate")
        with wss() as new:
            assert presented(new) == der("renewed.pem"), "new connections get the renewed certificate"
            echo(new, "new connection")
        echo(old, "the old connection is still open")
        # A bad reload (the key of another certificate) keeps the renewed one, and says why.
        shutil.copyfile(os.path.join(PKI, "stray-key.pem"), LIVE_KEY)
        line = sighup_and_wait("SIGHUP: reload failed")
        assert "does not match" in line, line
        with wss() as new:
            assert presented(new) == der("renewed.pem")
        echo(old, "still open after the failed reload")
    install("renewed.pem", "renewed-key.pem")


def scrape():
    """The server's /metrics over https://, as {series: value}."""
    conn = http.client.HTTPSConnection(HOST, PORT, context=context(), timeout=WAIT)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    assert response.status == 200, response.status
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def metrics_count_tls_connections_under_transport_tls_with_their_socket_bytes():
    accepted = 'wschat_connections_accepted_total{transport="%s"}'
    received = 'wschat_received_bytes_total{protocol="websocket"}'
    before = scrape()
    messages = 50
    with wss(compression=None) as ws:  # every message as it is, in a frame of its own
        for i in range(messages):
            echo(ws, b"%010d" % i)
        during = scrape()
        assert during['wschat_connections{transport="tls",phase="websocket"}'] >= 1, during
    after = scrape()
    # The scrapes are TLS connections too: one, the WebSocket, and the scrape in between.
    assert after[accepted % "tls"] >= before[accepted % "tls"] + 3, (before, after)
    assert after[accepted % "tcp"] == before[accepted % "tcp"], "nothing counted as plain TCP"
    # The socket's bytes: each 10-byte message in a masked frame (6 bytes more) in a TLS record of
    # its own (22 more). Counting the plaintext instead would come to well under this.
    grew = after[received] - before[received]
    assert grew >= messages * (10 + 6 + 22), f"websocket bytes in grew by {grew}"


def bad_files_stop_the_start_with_one_line():
    missing = os.path.join(PKI, "missing.pem")
    cases = [
        ("missing certificate", missing, os.path.join(PKI, "server-key.pem"), "cannot read TLS certificate"),
        ("certificate is a directory", PKI, os.path.join(PKI, "server-key.pem"), "cannot read TLS certificate"),
        ("mismatched key", os.path.join(PKI, "server.pem"), os.path.join(PKI, "stray-key.pem"), "does not match"),
    ]
    for name, cert, key, expected in cases:
        run = subprocess.run(
            [BIN, "--listen", "127.0.0.1:0", "--db", ":memory:", "--tls-cert", cert, "--tls-key", key],
            capture_output=True, text=True, timeout=WAIT, env={**os.environ, "RUST_LOG": "info"},
        )
        lines = run.stderr.splitlines()
        assert run.returncode != 0, f"{name}: started"
        assert len(lines) == 1 and expected in lines[0], f"{name}: {run.stderr!r}"


CHECKS = [
    wss_echo_trusting_the_ca,
    https_serves_the_page_on_the_same_port,
    plain_http_to_the_tls_port_is_dropped_with_a_debug_line,
    the_handshake_timeout_covers_the_tls_handshake,
    sighup_serves_a_renewed_certificate_and_keeps_open_connections,
    metrics_count_tls_connections_under_transport_tls_with_their_socket_bytes,
    bad_files_stop_the_start_with_one_line,
]


def main():
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {check.__name__}")
    print(f"tls: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
