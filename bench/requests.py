#!/usr/bin/env python3
"""Requests per day of history, per venue: one command, side by side against the least a page
size allows (1,440 / page size).

Starts `cryptolake simulate` (the venues' real formats and quirks, their default request
budgets enforced per client), backfills one symbol for `--days` days on every market into a
fresh lake, and reads the request count each backfill reports (the history search, retries and
the gap refetch included) and whether the simulator ever saw more than the budget.

    python3 bench/requests.py [--days 365] [--fault-rate 0.2] [--binary target/release/cryptolake]
"""

import argparse
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

MARKETS = [
    ("binance", "BTC-USDT"),
    ("binance-futures", "BTC-USDT"),
    ("coinbase", "BTC-USD"),
    ("okx", "BTC-USDT"),
    ("okx-swap", "BTC-USDT"),
    ("bybit", "BTC-USDT"),
    ("bybit-linear", "BTC-USDT"),
]

LINE = re.compile(
    r"requests to (\S+): (\d+) for ([\d.]+) symbol-days of history \(([\d.]+) per symbol-day; "
    r"a page holds (\d+) minutes, so the least is ([\d.]+)\)"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--binary", default=None)
    ap.add_argument("--markets", default=",".join(m for m, _ in MARKETS))
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/cryptolake-target"))
    binary = args.binary or os.path.join(target, "release", "cryptolake")
    port = free_port()
    sim = subprocess.Popen(
        [binary, "simulate", "--port", str(port), "--fault-rate", str(args.fault_rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        sim.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        today = dt.datetime.now(dt.timezone.utc).date()
        to = today - dt.timedelta(days=2)
        start = to - dt.timedelta(days=args.days - 1)
        rows = []
        wanted = args.markets.split(",")
        with tempfile.TemporaryDirectory() as d:
            for market, symbol in MARKETS:
                if market not in wanted:
                    continue
                lake = os.path.join(d, market)
                began = time.monotonic()
                out = subprocess.run(
                    [binary, "--lake", lake, "backfill", "--exchange", market, "--symbols", symbol,
                     "--from", start.isoformat(), "--to", to.isoformat(), "--base-url", url,
                     "--no-progress"],
                    capture_output=True,
                    text=True,
                )
                took = time.monotonic() - began
                m = LINE.search(out.stdout)
                if out.returncode != 0 or not m:
                    print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                    sys.exit(f"{market}: backfill failed")
                rows.append((market, int(m.group(5)), float(m.group(6)), int(m.group(2)),
                             float(m.group(4)), took))
                print(f"{market}: {m.group(0)} in {took:.1f} s", file=sys.stderr)
    finally:
        sim.terminate()
        sim.wait()
    print(f"{args.days} days of 1-minute history, one symbol, fault rate {args.fault_rate}\n")
    print("| market | page (minutes) | least requests / day | requests | requests / day | wall |")
    print("|---|---|---|---|---|---|")
    for market, page, least, sent, per_day, took in rows:
        print(f"| `{market}` | {page} | {least:.1f} | {sent} | {per_day:.1f} | {took:.0f} s |")


if __name__ == "__main__":
    main()
