#!/usr/bin/env python3
"""Tables of bench/durable.sh: the chat with its store in a file against the store in memory.

Usage: bench/durable.py RUN_DIR [RUN_DIR ...]    (reads raw.txt and meta.txt, prints Markdown)

Each line of raw.txt is one `wschat-bench chat --json` report with `server` ("file" or "memory"),
`round` and `scenario` added, and the store's figures from the server's shutdown log line
(`store_messages`, `store_commits`, `msgs_per_commit`, `store_largest_commit`,
`store_failed_commits`) and of its commit-latency histogram from /metrics (`commit_count`,
`commit_mean_us`, `commit_within_10ms`: per message, from handing it to the store to the answer, as
the event loop sees it); or a failed run with `error`. Several run directories pool their rounds,
as with aggregate.py.
"""

import statistics
import sys
from pathlib import Path

from aggregate import (balanced_row, failed, field, good, integer, load, micros, order_balanced, runs_cell,
                       spread)

STORES = ["file", "memory"]
SCENARIO = "chat"
# The targets: durable throughput at least half of memory's, p99 ack latency under 10 ms.
MIN_THROUGHPUT_RATIO = 0.5
MAX_P99_US = 10_000


def busy(runs):
    """The server's CPU seconds over the measured window's wall seconds, per run."""
    return [float(r["server_cpu_s"]) / float(r["seconds"]) for r in runs
            if "server_cpu_s" in r and float(r.get("seconds", 0)) > 0]


def median_cell(values, fmt):
    return fmt(statistics.median(values)) if values else "—"


def stores_table(runs):
    out = [
        "| store | runs | acked msgs/s, median (min–max) | ack p50 µs | ack p99 µs, median (min–max) "
        "| ack max µs | server CPU µs/msg (user + kernel) | server CPU busy | msgs per commit (largest) "
        "| commit wait µs, mean | msgs committed ≤ 10 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store in STORES:
        ok, bad = good(runs, store, SCENARIO), failed(runs, store, SCENARIO)
        if not ok and not bad:
            continue
        user, kernel = field(ok, "server_user_us_per_msg"), field(ok, "server_sys_us_per_msg")
        cpu = median_cell(field(ok, "server_cpu_us_per_msg"), micros)
        if user and kernel:
            cpu += f" ({statistics.median(user):.2f} + {statistics.median(kernel):.2f})"
        largest = field(ok, "store_largest_commit")
        per_commit = median_cell(field(ok, "msgs_per_commit"), lambda v: f"{v:.1f}")
        if largest:
            per_commit += f" ({max(largest):.0f})"
        out.append(
            f"| {store} | {runs_cell(ok, bad)} | {spread(field(ok, 'acked_per_sec'), integer)} "
            f"| {median_cell(field(ok, 'p50_us'), integer)} | {spread(field(ok, 'p99_us'), integer)} "
            f"| {median_cell(field(ok, 'max_us'), integer)} | {cpu} "
            f"| {median_cell(busy(ok), lambda v: f'{v:.0%}')} | {per_commit} "
            f"| {median_cell(field(ok, 'commit_mean_us'), integer)} "
            f"| {median_cell(field(ok, 'commit_within_10ms'), lambda v: f'{v:.0%}')} |"
        )
    return out


def targets_table(runs):
    rows = []
    values, balanced = order_balanced(runs, SCENARIO, "acked_per_sec", top="file", bottom="memory")
    balanced_row(rows, "acked msgs/s, file ÷ memory", values, balanced, f"≥ {MIN_THROUGHPUT_RATIO:.2f}×",
                 lambda m: m >= MIN_THROUGHPUT_RATIO)
    for store in STORES:
        p99 = [float(r["p99_us"]) for r in sorted(good(runs, store, SCENARIO), key=lambda r: r["round"])
               if "p99_us" in r]
        target = f"< {MAX_P99_US:,} µs" if store == "file" else "(none)"
        if not p99:
            rows.append(f"| ack p99 µs, {store} | — | — | — | {target} | no data |")
            continue
        median = statistics.median(p99)
        verdict = "" if store != "file" else "met" if median < MAX_P99_US else "**not met**"
        rows.append(f"| ack p99 µs, {store} | {', '.join(integer(v) for v in p99)} | {integer(median)} | — "
                    f"| {target} | {verdict} |")
    return [
        "Ratios are taken within each round. The throughput verdict is on the order-balanced mean (the "
        "geometric mean of the two orders' geometric means: see `order_balanced` in bench/aggregate.py); "
        "the latency verdict on the median over rounds.",
        "",
        "| figure | per round | median | balanced | target | |",
        "|---|---|---:|---:|---|---|",
        *rows,
    ]


def store_checks(runs):
    """Runs whose server stored fewer messages than were acknowledged, or more than were sent (a
    message refused with `rate_limited` or `store_unavailable` never reached the store)."""
    odd = []
    for r in runs:
        if "error" in r or "store_messages" not in r:
            continue
        low = int(r["acked_total"])
        high = low + int(r.get("in_flight_at_end", 0))
        if not low <= int(r["store_messages"]) <= high:
            odd.append(f"- round {r['round']}, {r['server']}: stored {r['store_messages']}, "
                       f"acknowledged {low}, at most {high} sent")
        if int(r.get("store_failed_commits", 0)) or int(r.get("wrong_key", 0)):
            odd.append(f"- round {r['round']}, {r['server']}: {r.get('store_failed_commits')} failed commits, "
                       f"{r.get('wrong_key')} acks with the wrong key")
    return odd


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: durable.py RUN_DIR [RUN_DIR ...]")
    runs, metas = [], []
    for index, arg in enumerate(sys.argv[1:]):
        run_dir = Path(arg)
        for run in load(run_dir / "raw.txt"):
            run["round"] = run.get("round", 0) + 1000 * index
            runs.append(run)
        if (run_dir / "meta.txt").exists():
            metas.append((run_dir / "meta.txt").read_text().strip())
    shapes = sorted({(int(r["connections"]), int(r["chars"])) for r in runs if "connections" in r})
    title = "; ".join(f"{c} senders, one message in flight each, {n}-character messages" for c, n in shapes)
    out = []
    if metas:
        out += ["```", "\n\n".join(metas), "```", ""]
    out += [f"### Durable chat: {title or 'no runs'}", "", *stores_table(runs), "", "### Against the targets", "",
            *targets_table(runs), ""]
    odd = store_checks(runs)
    out += ["### Checks", ""]
    out += odd or ["Every run: the server stored at least the messages acknowledged and at most those sent "
                   "(the store's count lies between `acked_total` and `acked_total` + `in_flight_at_end`); "
                   "no failed commit, every ack carried its message's key."]
    failures = [r for r in runs if "error" in r]
    if failures:
        out += ["", "### Failed runs", ""]
        out += [f"- round {r.get('round')}, {r.get('server')}: {r['error']}" for r in failures]
    print("\n".join(out))


if __name__ == "__main__":
    main()
