#!/usr/bin/env python3
"""Aggregates the raw JSON lines of bench/compare.sh into Markdown tables.

Usage: bench/aggregate.py RUN_DIR    (reads RUN_DIR/raw.txt and RUN_DIR/meta.txt, prints Markdown)

Each line of raw.txt is one wschat-bench report (`--json`) with `server`, `round`, `scenario`
added by compare.sh, or a failed run: `{"server", "round", "scenario", "error"}`.
Medians are over rounds; ratios are computed within each round (same conditions for both
servers) and then their median is taken. When the run has `wschat-base` (compare.sh with
BASELINE=<rev>), a last table compares wschat with it the same way. When it has the
permessage-deflate scenarios, a "permessage-deflate" table sets each one against its uncompressed
twin (same server, same round) and shows the compression ratio measured on the wire.
"""

import json
import math
import statistics
import sys
from pathlib import Path

SERVERS = ["wschat", "wschat-base", "fastwebsockets", "tokio-tungstenite", "ws"]

# scenario id -> title; the order of the report.
SCENARIOS = {
    "echo-100c-16B-k1": "Echo, 100 connections × 16 B, 1 in flight",
    "echo-100c-1KiB-k1": "Echo, 100 connections × 1 KiB, 1 in flight",
    "echo-1000c-16B-k1": "Echo, 1000 connections × 16 B, 1 in flight",
    "echo-100c-16B-k8": "Echo, 100 connections × 16 B, 8 in flight",
    "broadcast": "Chat broadcast",
    "hold": "Idle connections (RSS)",
    "hold-deflate": "Idle connections that negotiated permessage-deflate (RSS)",
    "echo-chat": "Echo, 100 connections × 1 KiB of chat text, 1 in flight",
    "echo-deflate": "Echo, 100 connections × 1 KiB of chat text, 1 in flight, permessage-deflate",
    "broadcast-chat": "Chat broadcast of chat lines",
    "broadcast-deflate": "Chat broadcast of chat lines, permessage-deflate",
}
# permessage-deflate scenario -> its uncompressed twin (same messages, same rate).
DEFLATE_TWINS = {"hold-deflate": "hold", "echo-deflate": "echo-chat", "broadcast-deflate": "broadcast-chat"}
ONE_IN_FLIGHT = ["echo-100c-16B-k1", "echo-100c-1KiB-k1", "echo-1000c-16B-k1"]
ECHO = ONE_IN_FLIGHT + ["echo-100c-16B-k8"]
SHORT = {
    "echo-100c-16B-k1": "16 B, 100 conns",
    "echo-100c-1KiB-k1": "1 KiB, 100 conns",
    "echo-1000c-16B-k1": "16 B, 1000 conns",
    "echo-100c-16B-k8": "16 B, 100 conns, 8 in flight",
}


def load(path):
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError as error:
            print(f"aggregate.py: {path}:{number}: not JSON ({error})", file=sys.stderr)
    return runs


def spread(values, fmt):
    """`median (min–max)`, or `median` alone for a single value, or `—`."""
    if not values:
        return "—"
    median = fmt(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({fmt(min(values))}–{fmt(max(values))})"


def integer(value):
    return f"{value:,.0f}"


def micros(value):
    return f"{value:.2f}"


def ratio(value):
    return f"{value:.2f}×"


def is_wschat(server):
    return server in ("wschat", "wschat-base")


def good(runs, server, scenario):
    return [r for r in runs if r.get("server") == server and r.get("scenario") == scenario and "error" not in r]


def failed(runs, server, scenario):
    return [r for r in runs if r.get("server") == server and r.get("scenario") == scenario and "error" in r]


def field(runs, name):
    return [float(r[name]) for r in runs if name in r]


def runs_cell(ok, bad):
    return f"{len(ok)}" if not bad else f"{len(ok)} ({len(bad)} failed)"


def per_round_ratios(runs, scenario, numerator, denominator, name):
    """wschat-vs-peer ratios of `name`, one per round where both ran."""
    def by_round(server):
        return {r["round"]: float(r[name]) for r in good(runs, server, scenario) if name in r}

    top, bottom = by_round(numerator), by_round(denominator)
    return [top[n] / bottom[n] for n in sorted(top) if n in bottom and bottom[n] > 0]


def target_row(rows, what, values, fmt, target_text, passes):
    """Appends a row: the per-round values, their median and whether the median meets the target."""
    if not values:
        rows.append(f"| {what} | — | — | {target_text} | no data |")
        return
    median = statistics.median(values)
    verdict = "met" if passes(median) else "**not met**"
    rows.append(f"| {what} | {', '.join(fmt(v) for v in values)} | {fmt(median)} | {target_text} | {verdict} |")


def in_order_row(rows, runs, server, scenario, what):
    """Appends a row: did every receiver get every message, in order, in each round of `server`?"""
    rounds = sorted({r["round"] for r in runs if r.get("server") == server and r.get("scenario") == scenario})
    if not rounds:
        rows.append(f"| {what} | — | — | every round | no data |")
        return
    cells = []
    for n in rounds:
        ok = [r for r in good(runs, server, scenario) if r["round"] == n]
        cells.append("failed" if not ok else "yes" if ok[0].get("all_in_order") is True
                     else f"**no** ({why_not_in_order(ok[0])})")
    verdict = "met" if all(cell == "yes" for cell in cells) else "**not met**"
    rows.append(f"| {what} | {', '.join(cells)} | {cells.count('yes')}/{len(cells)} | every round | {verdict} |")


def why_not_in_order(run):
    """How a broadcast run fell short: receivers still behind when the drain gave up, receivers that
    saw a message out of order or skipped one."""
    if "receivers_short" not in run:
        return "no detail"
    return f"{run['receivers_short']} short, {run['receivers_out_of_order']} out of order"


def broadcast_title(runs, present, scenario):
    """A broadcast's heading, with the receivers and the sender's rate of its runs."""
    shapes = sorted({(int(r["receivers"]), float(r["rate"])) for s in present
                     for r in good(runs, s, scenario) if "receivers" in r and "rate" in r})
    if not shapes:
        return SCENARIOS[scenario]
    shown = (f"{c:,} receivers, one sender at {rate:,.0f} msgs/s" for c, rate in shapes)
    return f"{SCENARIOS[scenario]}, " + "; ".join(shown)


def broadcast_table(runs, present, scenario):
    """A broadcast's table: deliveries, order, the server's CPU per delivery and its memory."""
    out = [
        "Every receiver checks it got every message in order. CPU per delivery counts the server's CPU "
        "and the deliveries from the start of the measured window to the end of the drain (the wait "
        "for the last deliveries after the sender stops); deliveries/s counts the window only. "
        "Load generator busy is its own CPU seconds per second over the same time: near 100 %, the "
        "client, not the server, set the pace.",
        "",
        "| server | runs | deliveries/s, median (min–max) | all in order "
        "| server CPU µs/delivery, median (min–max) | user + kernel µs, median | server CPU busy, median | drain s, median | p50 / p99 ms, median "
        "| server RSS KiB at the end, median | load generator busy, median |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in present:
        ok, bad = good(runs, server, scenario), failed(runs, server, scenario)
        in_order = sum(1 for r in ok if r.get("all_in_order") is True)
        shortfalls = [why_not_in_order(r) for r in ok if r.get("all_in_order") is not True]
        order_cell = f"{in_order}/{len(ok)}" if ok else "—"
        if shortfalls:
            order_cell += f" ({'; '.join(shortfalls)})"
        rss = field(ok, "server_rss_kib")
        user, kernel = field(ok, "server_user_us_per_delivery"), field(ok, "server_sys_us_per_delivery")
        split = f"{statistics.median(user):.2f} + {statistics.median(kernel):.2f}" if user and kernel else "—"
        # The server's CPU time covers the window and the drain.
        busy = [float(r["server_cpu_s"]) / (float(r["seconds"]) + float(r.get("drain_s", 0))) for r in ok
                if "server_cpu_s" in r and float(r.get("seconds", 0)) > 0]
        drain, p50, p99 = field(ok, "drain_s"), field(ok, "p50_us"), field(ok, "p99_us")
        latency = (f"{statistics.median(p50) / 1000:.1f} / {statistics.median(p99) / 1000:.1f}"
                   if p50 and p99 else "—")
        client = field(ok, "bench_cpu_busy")
        out.append(
            f"| {server} | {runs_cell(ok, bad)} | {spread(field(ok, 'deliveries_per_sec'), integer)} "
            f"| {order_cell} "
            f"| {spread(field(ok, 'server_cpu_us_per_delivery'), micros)} | {split} "
            f"| {f'{statistics.median(busy):.0%}' if busy else '—'} "
            f"| {f'{statistics.median(drain):.2f}' if drain else '—'} | {latency} "
            f"| {integer(statistics.median(rss)) if rss else '—'} "
            f"| {f'{statistics.median(client):.0%}' if client else '—'} |"
        )
    return out


def twin_ratios(runs, server, scenario, twin, name):
    """`name` of `scenario` ÷ `name` of its twin for `server`, one per round where both ran."""
    def by_round(which):
        return {r["round"]: float(r[name]) for r in good(runs, server, which) if name in r}

    top, bottom = by_round(scenario), by_round(twin)
    return [top[n] / bottom[n] for n in sorted(top) if n in bottom and bottom[n] > 0]


def idle_connections(runs, server):
    """The connection counts of `server`'s hold runs, as a heading shows them."""
    counts = sorted({int(r["connections"]) for scenario in ("hold", "hold-deflate")
                     for r in good(runs, server, scenario) if "connections" in r})
    return "/".join(f"{c:,}" for c in counts) or "—"


def expected_connections(run):
    """How many connections of a run should have negotiated: a broadcast's sender is one more."""
    if "receivers" in run:
        return int(run["receivers"]) + 1
    return int(run.get("connections", 0))


def wire_cell(run):
    """A run's wire ratio and the share of its messages that arrived compressed."""
    messages = int(run.get("messages_received", 0))
    share = f", {int(run.get('compressed_messages', 0)) / messages:.0%} compressed" if messages else ""
    return f"{float(run['wire_ratio']):.3f}{share}"


def deflate_table(runs, servers):
    """permessage-deflate: each scenario against its uncompressed twin, and the wire ratios."""
    rows = []
    with_deflate = [s for s in servers if any(good(runs, s, d) or failed(runs, s, d) for d in DEFLATE_TWINS)]
    for server in with_deflate:
        # The agreement: without it every other row measures the uncompressed path.
        for scenario in DEFLATE_TWINS:
            done = sorted(good(runs, server, scenario), key=lambda r: r["round"])
            if not done:
                continue
            cells = [f"{int(r.get('deflate_negotiated', 0)):,}/{expected_connections(r):,}" for r in done]
            complete = all(int(r.get("deflate_negotiated", 0)) == expected_connections(r) for r in done)
            resets = {r["deflate_server_no_context_takeover"] for r in done if "deflate_server_no_context_takeover" in r}
            how = {frozenset([True]): " (server compresses each message alone)",
                   frozenset([False]): " (server keeps its context across messages)"}.get(frozenset(resets), "")
            rows.append(f"| connections that negotiated it{how}, {scenario} | {server} | {', '.join(cells)} | "
                        f"| all | {'met' if complete else '**not met**'} |")
    for server in with_deflate:
        wschat = is_wschat(server)
        side = ("side by side", lambda m: True)
        checks = [
            ("hold-deflate", "server_rss_kib", f"RSS, {idle_connections(runs, server)} idle connections, negotiated ÷ not",
             ("≤ 1.20×", lambda m: m <= 1.20) if wschat else side),
            ("broadcast-deflate", "server_cpu_us_per_delivery", "broadcast: CPU/delivery, compressed ÷ plain",
             ("≤ 1.25×", lambda m: m <= 1.25)),
            ("broadcast-deflate", "deliveries_per_sec", "broadcast: deliveries/s, compressed ÷ plain",
             ("≥ 0.97× (same rate)", lambda m: m >= 0.97)),
            ("echo-deflate", "server_cpu_us_per_msg", "echo 1 KiB chat text: CPU/msg, compressed ÷ plain", side),
            ("echo-deflate", "msgs_per_sec", "echo 1 KiB chat text: msgs/s, compressed ÷ plain", side),
        ]
        for scenario, name, what, (target_text, passes) in checks:
            values = twin_ratios(runs, server, scenario, DEFLATE_TWINS[scenario], name)
            if not values:
                continue
            median = statistics.median(values)
            verdict = "" if target_text == "side by side" else "met" if passes(median) else "**not met**"
            if verdict and scenario == "hold-deflate" and idle_connections(runs, server) != "10,000":
                verdict = "n/a (target is at 10,000)"
            rows.append(f"| {what} | {server} | {', '.join(ratio(v) for v in values)} | {ratio(median)} "
                        f"| {'—' if target_text == 'side by side' else target_text} | {verdict} |")
        # A broadcast whose server falls behind is not "the same rate": its CPU per delivery then
        # counts a backlog. Delivered ÷ asked (receivers × rate) says whether it kept up.
        for scenario in ("broadcast-chat", "broadcast-deflate"):
            done = sorted(good(runs, server, scenario), key=lambda r: r["round"])
            kept = [float(r["deliveries_per_sec"]) / (int(r["receivers"]) * float(r["rate"])) for r in done
                    if float(r.get("rate", 0)) > 0 and int(r.get("receivers", 0)) > 0]
            if kept:
                median = statistics.median(kept)
                rows.append(f"| {scenario}: deliveries/s ÷ receivers × rate | {server} "
                            f"| {', '.join(ratio(v) for v in kept)} | {ratio(median)} | ≥ 0.97× (sustained) "
                            f"| {'met' if median >= 0.97 else '**not met**'} |")
        # Bytes on the wire per byte of message, as the clients received them.
        for scenario in ("broadcast-deflate", "broadcast-chat", "echo-deflate", "echo-chat"):
            done = sorted((r for r in good(runs, server, scenario) if "wire_ratio" in r), key=lambda r: r["round"])
            if not done:
                continue
            median = statistics.median(float(r["wire_ratio"]) for r in done)
            rows.append(f"| wire ÷ message bytes, {scenario} | {server} | {'; '.join(wire_cell(r) for r in done)} "
                        f"| {median:.3f} ({1 / median:.2f}:1) | — | |")
    if not rows:
        return []
    corpora = sorted({(int(r["corpus_lines"]), int(r["corpus_bytes"])) for r in runs
                      if r.get("scenario") in ("echo-deflate", "broadcast-deflate") and "corpus_bytes" in r})
    corpus_note = ("" if not corpora else " The chat text came from a corpus of " + "; ".join(
        f"{lines:,} lines, {size:,} bytes" for lines, size in corpora) + ". A server that keeps its "
        "compression context (ws, unless the client asks otherwise, and browsers do not) finds "
        "whatever recurs within its last 32 KiB, so its ratio improves the more often lines recur "
        "there: with a corpus smaller than 32 KiB every line does, far more than in a real chat, "
        "and its echo ratio is a best case (a larger TEXT_CORPUS brings it nearer a real one). "
        "wschat compresses each message alone, so its ratio depends on the messages only.")
    return [
        "### permessage-deflate",
        "",
        "Each permessage-deflate scenario against its uncompressed twin on the same server: the ratio "
        "is taken within each round, then the median over rounds. hold-deflate ÷ hold: the same idle "
        "connections, all having negotiated the extension; broadcast-deflate ÷ broadcast-chat: the same "
        "chat lines at the same rate to the same receivers; echo-deflate ÷ echo-chat: the same 1 KiB "
        "blocks of chat text (ws has no chat, so its compressed figures come from the echo). Wire ÷ message "
        "bytes is what the clients read from their sockets (frame headers included) over the bytes of "
        "the messages those frames carried once inflated: 1.01 or so uncompressed, and its inverse is the "
        "compression ratio as the clients see it; \"compressed\" is the share of messages that arrived "
        "compressed (a server leaves short ones as they are: wschat below 256 bytes, ws below 1,024)."
        + corpus_note,
        "",
        "| figure | server | per round | median | target | |",
        "|---|---|---|---:|---|---|",
        *rows,
    ]


def order_balanced(runs, scenario, name, top="wschat", bottom="wschat-base"):
    """`top` ÷ `bottom` (by default wschat ÷ wschat-base) of `name` per round, and their
    order-balanced mean.

    compare.sh alternates the order of the servers every round (odd rounds in the SERVERS order,
    even rounds reversed; durable.sh does the same with its two stores). On this VM the order alone
    moves a same-round ratio by up to ±20 % (BENCHMARKS.md, "Noise"), so a plain median over an odd
    number of rounds leans towards whichever order had one more round. The balanced mean is the geometric mean of the two orders' geometric
    means: each order weighs the same, however many rounds each had.
    """
    def by_round(server):
        return {r["round"]: float(r[name]) for r in good(runs, server, scenario) if name in r}

    above, below = by_round(top), by_round(bottom)
    rounds = [n for n in sorted(above) if n in below and below[n] > 0]
    values = [above[n] / below[n] for n in rounds]
    classes = [[v for n, v in zip(rounds, values) if n % 2 == parity] for parity in (0, 1)]
    geo = [math.exp(statistics.fmean(math.log(v) for v in c)) for c in classes if c]
    balanced = math.exp(statistics.fmean(math.log(g) for g in geo)) if geo else None
    return values, balanced


def balanced_row(rows, what, values, balanced, target_text, passes):
    """A baseline row: per-round ratios, their median, the order-balanced mean and its verdict."""
    if not values:
        rows.append(f"| {what} | — | — | — | {target_text} | no data |")
        return
    verdict = "met" if passes(balanced) else "**not met**"
    per_round = ", ".join(ratio(v) for v in values)
    rows.append(
        f"| {what} | {per_round} | {ratio(statistics.median(values))} | {ratio(balanced)} "
        f"| {target_text} | {verdict} |"
    )


def baseline_table(runs):
    """wschat against its own baseline build: the same-round ratios new ÷ base."""
    rows = []
    checks = [
        *[(scenario, "server_cpu_us_per_msg", f"CPU/msg, {SHORT[scenario]}", "≤ 1.03×", lambda m: m <= 1.03)
          for scenario in ECHO],
        ("echo-100c-16B-k8", "msgs_per_sec", f"msgs/s, {SHORT['echo-100c-16B-k8']}", "≥ 0.97×",
         lambda m: m >= 0.97),
        ("broadcast", "server_cpu_us_per_delivery", "broadcast: CPU/delivery", "≤ 1.03×", lambda m: m <= 1.03),
        ("broadcast", "deliveries_per_sec", "broadcast: deliveries/s", "≥ 0.97×", lambda m: m >= 0.97),
    ]
    for scenario, name, what, target_text, passes in checks:
        values, balanced = order_balanced(runs, scenario, name)
        balanced_row(rows, what, values, balanced, target_text, passes)
    for server in ("wschat", "wschat-base"):
        done = [r for r in good(runs, server, "broadcast")]
        ordered = sum(1 for r in done if r.get("all_in_order") in (True, "true"))
        rows.append(f"| broadcast: every message in order, {server} | {ordered}/{len(done)} rounds | | | every round "
                    f"| {'met' if done and ordered == len(done) else '**not met**'} |")
    conns = sorted({int(r["connections"]) for s in ("wschat", "wschat-base") for r in good(runs, s, "hold")})
    values, balanced = order_balanced(runs, "hold", "server_rss_kib")
    balanced_row(rows, f"RSS, {'/'.join(f'{c:,}' for c in conns) or '—'} idle connections", values, balanced,
                 "≤ 1.10×", lambda m: m <= 1.10)
    return [
        "### wschat vs its baseline",
        "",
        "Ratios wschat ÷ wschat-base (the BASELINE build), taken within each round. The verdict is on "
        "the order-balanced mean (the geometric mean of the two server orders' geometric means; see "
        "`order_balanced` in bench/aggregate.py): on this VM the order alone moves a same-round ratio "
        "by up to ±20 %, which a median over an odd number of rounds does not cancel. A target allows "
        "no loss beyond the noise margin: CPU at most 3 % more, throughput at most 3 % less, memory "
        "at most 10 % more.",
        "",
        "| figure | per round | median | balanced | target | |",
        "|---|---|---:|---:|---|---|",
        *rows,
    ]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: aggregate.py RUN_DIR [RUN_DIR ...]")
    # Several runs pool their rounds (renumbered, keeping each round's parity, i.e. its order).
    runs, metas = [], []
    for index, arg in enumerate(sys.argv[1:]):
        run_dir = Path(arg)
        for run in load(run_dir / "raw.txt"):
            run["round"] = run.get("round", 0) + 1000 * index
            runs.append(run)
        if (run_dir / "meta.txt").exists():
            metas.append((run_dir / "meta.txt").read_text().strip())
    meta = "\n\n".join(metas)
    servers = [s for s in SERVERS if any(r.get("server") == s for r in runs)]
    servers += sorted({r["server"] for r in runs if "server" in r} - set(servers))
    out = []

    if meta:
        out += ["```", meta, "```", ""]

    for scenario, title in SCENARIOS.items():
        present = [s for s in servers if good(runs, s, scenario) or failed(runs, s, scenario)]
        if not present:
            continue
        out.append(f"### {title}")
        out.append("")
        if scenario.startswith("broadcast"):
            out[-2] = f"### {broadcast_title(runs, present, scenario)}"
            out += broadcast_table(runs, present, scenario)
        elif scenario.startswith("hold"):
            conns = sorted({int(r["connections"]) for s in present for r in good(runs, s, scenario)})
            if conns:
                out[-2] = f"### {', '.join(f'{c:,}' for c in conns)} {title[0].lower()}{title[1:]}"
            out.append("| server | runs | RSS KiB, median (min–max) | RSS bytes/conn, median |")
            out.append("|---|---:|---:|---:|")
            for server in present:
                ok, bad = good(runs, server, scenario), failed(runs, server, scenario)
                per_conn = field(ok, "server_rss_bytes_per_conn")
                out.append(
                    f"| {server} | {runs_cell(ok, bad)} | {spread(field(ok, 'server_rss_kib'), integer)} "
                    f"| {integer(statistics.median(per_conn)) if per_conn else '—'} |"
                )
        else:
            out.append(
                "| server | runs | msgs/s, median (min–max) | server CPU µs/msg, median (min–max) "
                "| server CPU busy, median | p50 µs, median | p99 µs, median | load generator busy, median |"
            )
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for server in present:
                ok, bad = good(runs, server, scenario), failed(runs, server, scenario)
                p50, p99 = field(ok, "p50_us"), field(ok, "p99_us")
                busy = [float(r["server_cpu_s"]) / float(r["seconds"]) for r in ok
                        if "server_cpu_s" in r and float(r.get("seconds", 0)) > 0]
                client = field(ok, "bench_cpu_busy")
                out.append(
                    f"| {server} | {runs_cell(ok, bad)} | {spread(field(ok, 'msgs_per_sec'), integer)} "
                    f"| {spread(field(ok, 'server_cpu_us_per_msg'), micros)} "
                    f"| {f'{statistics.median(busy):.0%}' if busy else '—'} "
                    f"| {integer(statistics.median(p50)) if p50 else '—'} "
                    f"| {integer(statistics.median(p99)) if p99 else '—'} "
                    f"| {f'{statistics.median(client):.0%}' if client else '—'} |"
                )
        out.append("")

    # The project's targets.
    rows = []
    for scenario in ONE_IN_FLIGHT:
        target_row(
            rows, f"CPU/msg wschat ÷ fastwebsockets, {SHORT[scenario]}",
            per_round_ratios(runs, scenario, "wschat", "fastwebsockets", "server_cpu_us_per_msg"),
            ratio, "≤ 1.00×", lambda m: m <= 1.0,
        )
    for scenario in ONE_IN_FLIGHT:
        target_row(
            rows, f"CPU/msg wschat ÷ tokio-tungstenite, {SHORT[scenario]}",
            per_round_ratios(runs, scenario, "wschat", "tokio-tungstenite", "server_cpu_us_per_msg"),
            ratio, "≤ 0.67×", lambda m: m <= 0.67,
        )
    target_row(
        rows, "msgs/s wschat ÷ tokio-tungstenite, 16 B, 100 conns, 8 in flight",
        per_round_ratios(runs, "echo-100c-16B-k8", "wschat", "tokio-tungstenite", "msgs_per_sec"),
        ratio, "≥ 1.60×", lambda m: m >= 1.6,
    )
    target_row(
        rows, "wschat p99 µs, 16 B, 100 conns, 1 in flight",
        [float(r["p99_us"]) for r in sorted(good(runs, "wschat", "echo-100c-16B-k1"), key=lambda r: r["round"])],
        integer, "≤ 1,100 µs", lambda m: m <= 1100,
    )
    hold = sorted(good(runs, "wschat", "hold"), key=lambda r: r["round"])
    conns = {int(r["connections"]) for r in hold}
    if conns == {10000}:
        target_row(
            rows, "wschat RSS KiB, 10,000 idle connections",
            [float(r["server_rss_kib"]) for r in hold],
            integer, "≤ 10 MB (9,766 KiB)", lambda m: m * 1024 <= 10_000_000,
        )
    elif hold:
        values = ", ".join(integer(float(r["server_rss_kib"])) for r in hold)
        rows.append(
            f"| wschat RSS KiB, {'/'.join(f'{c:,}' for c in sorted(conns))} idle connections | {values} "
            f"| {integer(statistics.median(float(r['server_rss_kib']) for r in hold))} "
            "| ≤ 10 MB at 10,000 | n/a (target is at 10,000) |"
        )
    out.append("### Against the targets")
    out.append("")
    out.append("Ratios are taken within each round, then the median over rounds.")
    out.append("")
    out.append("| figure | per round | median | target | |")
    out.append("|---|---|---:|---|---|")
    out += rows

    deflate = deflate_table(runs, servers)
    if deflate:
        out.append("")
        out += deflate

    if any(r.get("server") == "wschat-base" for r in runs):
        out.append("")
        out += baseline_table(runs)

    failures = [r for r in runs if "error" in r]
    if failures:
        out.append("")
        out.append("### Failed runs")
        out.append("")
        for r in failures:
            out.append(f"- round {r.get('round')}, {r.get('scenario')}, {r.get('server')}: {r['error']}")

    print("\n".join(out))


if __name__ == "__main__":
    main()
