#!/usr/bin/env python3
"""Aggregates the raw JSON lines of bench/compare.sh into Markdown tables.

Usage: bench/aggregate.py RUN_DIR    (reads RUN_DIR/raw.txt and RUN_DIR/meta.txt, prints Markdown)

Each line of raw.txt is one wschat-bench report (`--json`) with `server`, `round`, `scenario`
added by compare.sh, or a failed run: `{"server", "round", "scenario", "error"}`.
Medians are over rounds; ratios are computed within each round (same conditions for both
servers) and then their median is taken. When the run has `wschat-base` (compare.sh with
BASELINE=<rev>), a last table compares wschat with it the same way.
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
}
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


def broadcast_title(runs, present):
    """The broadcast's heading, with the receivers and the sender's rate of its runs."""
    shapes = sorted({(int(r["receivers"]), float(r["rate"])) for s in present
                     for r in good(runs, s, "broadcast") if "receivers" in r and "rate" in r})
    if not shapes:
        return SCENARIOS["broadcast"]
    shown = (f"{c:,} receivers, one sender at {rate:,.0f} msgs/s" for c, rate in shapes)
    return "Chat broadcast, " + "; ".join(shown)


def broadcast_table(runs, present):
    """The broadcast's table: deliveries, order, the server's CPU per delivery and its memory."""
    out = [
        "Every receiver checks it got every message in order. CPU per delivery counts the server's CPU "
        "and the deliveries from the start of the measured window to the end of the drain (the wait "
        "for the last deliveries after the sender stops); deliveries/s counts the window only.",
        "",
        "| server | runs | deliveries/s, median (min–max) | all in order "
        "| server CPU µs/delivery, median (min–max) | user + kernel µs, median | server CPU busy, median | drain s, median | p50 / p99 ms, median "
        "| server RSS KiB at the end, median |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for server in present:
        ok, bad = good(runs, server, "broadcast"), failed(runs, server, "broadcast")
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
        out.append(
            f"| {server} | {runs_cell(ok, bad)} | {spread(field(ok, 'deliveries_per_sec'), integer)} "
            f"| {order_cell} "
            f"| {spread(field(ok, 'server_cpu_us_per_delivery'), micros)} | {split} "
            f"| {f'{statistics.median(busy):.0%}' if busy else '—'} "
            f"| {f'{statistics.median(drain):.2f}' if drain else '—'} | {latency} "
            f"| {integer(statistics.median(rss)) if rss else '—'} |"
        )
    return out


def order_balanced(runs, scenario, name, top="wschat", bottom="wschat-base"):
    """`top` ÷ `bottom` (by default wschat ÷ wschat-base) of `name` per round, and their
    order-balanced mean.

    compare.sh alternates the order of the servers every round (odd rounds in the SERVERS order,
    even rounds reversed; durable.sh does the same with its two stores). On this VM the order alone moves a same-round ratio by up to ±20 %
    (BENCHMARKS.md, "Noise"), so a plain median over an odd number of rounds leans towards whichever
    order had one more round. The balanced mean is the geometric mean of the two orders' geometric
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
        if scenario == "broadcast":
            out[-2] = f"### {broadcast_title(runs, present)}"
            out += broadcast_table(runs, present)
        elif scenario == "hold":
            conns = sorted({int(r["connections"]) for s in present for r in good(runs, s, scenario)})
            if conns:
                out[-2] = f"### {', '.join(f'{c:,}' for c in conns)} idle connections (RSS)"
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
                "| server CPU busy, median | p50 µs, median | p99 µs, median |"
            )
            out.append("|---|---:|---:|---:|---:|---:|---:|")
            for server in present:
                ok, bad = good(runs, server, scenario), failed(runs, server, scenario)
                p50, p99 = field(ok, "p50_us"), field(ok, "p99_us")
                busy = [float(r["server_cpu_s"]) / float(r["seconds"]) for r in ok
                        if "server_cpu_s" in r and float(r.get("seconds", 0)) > 0]
                out.append(
                    f"| {server} | {runs_cell(ok, bad)} | {spread(field(ok, 'msgs_per_sec'), integer)} "
                    f"| {spread(field(ok, 'server_cpu_us_per_msg'), micros)} "
                    f"| {f'{statistics.median(busy):.0%}' if busy else '—'} "
                    f"| {integer(statistics.median(p50)) if p50 else '—'} "
                    f"| {integer(statistics.median(p99)) if p99 else '—'} |"
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
