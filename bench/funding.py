#!/usr/bin/env python3
"""Funding of perpetual markets: requests per venue for a year of history, and what a month of
funding cost as SQL, `cryptolake sql` against DuckDB over the same files.

Starts `cryptolake simulate` (the venues' real formats, their default request budgets), ingests
a year of funding (`ingest --data funding`) of every USDT symbol the simulator lists on each
perpetual market into a fresh lake, builds silver, then times

    SELECT date_trunc('month', funding_slot) AS month, sum(rate), count(*)
    FROM crypto_analytics.funding_rates WHERE exchange = ... AND symbol = ... GROUP BY month

as fresh processes, median of `--runs` each: `cryptolake sql` and DuckDB (its views from
`cryptolake catalog ddl --engine duckdb`).

    python3 bench/funding.py [--days 365] [--runs 7] [--binary target/release/cryptolake]
"""

import argparse
import datetime as dt
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import duckdb_setup, measure, venv_python  # noqa: E402

MARKETS = ["binance-futures", "okx-swap", "bybit-linear"]
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT"]
LINE = re.compile(r"funding (\S+): (\S+): (\d+) events in (\d+) requests")
QUERY = (
    "SELECT date_trunc('month', funding_slot) AS month, sum(rate) AS paid, count(*) AS events "
    "FROM crypto_analytics.funding_rates WHERE exchange = 'binance-futures' AND symbol = 'BTC-USDT' "
    "GROUP BY month ORDER BY month"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--binary", default=None)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/cryptolake-target"))
    binary = args.binary or os.path.join(target, "release", "cryptolake")
    python = str(venv_python())
    port = free_port()
    sim = subprocess.Popen(
        [binary, "simulate", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    requests = []
    with tempfile.TemporaryDirectory() as d:
        lake = os.path.join(d, "lake")
        try:
            sim.stdout.readline()
            url = f"http://127.0.0.1:{port}"
            until = dt.datetime.now(dt.timezone.utc).date()
            since = until - dt.timedelta(days=args.days)
            for market in MARKETS:
                out = subprocess.run(
                    [binary, "--lake", lake, "ingest", "--exchange", market, "--symbols",
                     ",".join(SYMBOLS), "--data", "funding", "--since", since.isoformat(),
                     "--until", until.isoformat(), "--base-url", url],
                    capture_output=True,
                    text=True,
                )
                found = LINE.findall(out.stdout)
                if out.returncode != 0 or len(found) != len(SYMBOLS):
                    print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                    sys.exit(f"{market}: funding ingest failed")
                for ex, symbol, events, sent in found:
                    requests.append((ex, symbol, int(events), int(sent)))
        finally:
            sim.terminate()
            sim.wait()
        subprocess.run([binary, "--lake", lake, "silver"], check=True, capture_output=True)
        setup = duckdb_setup(binary, lake)
        script = setup + f"print(con.sql({QUERY!r}).to_arrow_table().num_rows)\n"
        ours, theirs = [], []
        rows = set()
        for _ in range(args.runs):
            for cmd, into in (
                ([binary, "--lake", lake, "sql", "--format", "csv", QUERY], ours),
                ([python, "-c", script], theirs),
            ):
                seconds, _, outcome = measure(cmd, 120)
                if outcome != "ok":
                    sys.exit(f"{cmd[0]}: {outcome}")
                into.append(seconds)
        out = subprocess.run([binary, "--lake", lake, "sql", "--format", "csv", QUERY],
                             check=True, capture_output=True, text=True).stdout
        rows.add(len(out.strip().splitlines()) - 1)
        duck = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout
        rows.add(int(duck.strip()))
    print(f"{args.days} days of funding, {len(SYMBOLS)} symbols per perpetual market\n")
    print("| market | symbol | events | requests |")
    print("|---|---|---|---|")
    for ex, symbol, events, sent in requests:
        print(f"| `{ex}` | {symbol} | {events} | {sent} |")
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"\nmonthly funding of one symbol ({sorted(rows)} rows from each engine), median of {args.runs} processes:")
    print(f"cryptolake sql {a:.3f} s, DuckDB {b:.3f} s ({a / b:.2f}x)")


if __name__ == "__main__":
    main()
