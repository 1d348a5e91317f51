#!/usr/bin/env python3
"""Query latency over the PostgreSQL wire protocol: the two dashboard queries of `run.py
--queries` sent to `cryptolake serve --pg` by psycopg 3 (one connection, as a BI tool keeps
it; text and binary results), against `cryptolake sql` and DuckDB as fresh processes (what
run.py reports; DuckDB's result taken as Arrow) and DuckDB on one kept connection. Every path's row count must agree. Prints
the table BENCHMARKS.md records.

  python3 bench/wire.py                              # bench/work/40x365/lake, 5 runs
  python3 bench/wire.py --lake PATH --days 365 --runs 7 --binary target/release/cryptolake
"""

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark runner's queries, DuckDB views, measure() and venv)

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", default=str(ROOT / "bench/work/40x365/lake"))
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=None)
    args = ap.parse_args()
    binary = args.binary or str(
        Path(__import__("os").environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "cryptolake"
    )
    import psycopg  # from the repository's .venv (psycopg 3), which runs this script

    duck_python = run.venv_python()
    port = free_port()
    server = subprocess.Popen(
        [binary, "--lake", args.lake, "serve", "--no-schedule", "--http", "127.0.0.1:0", "--pg", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("serving the PostgreSQL protocol"):
                break
        dsn = f"host=127.0.0.1 port={port} dbname=cryptolake user=bench"
        setup = run.duckdb_setup(binary, args.lake)
        print(f"{'query':40} {'wire text':>10} {'wire binary':>12} {'first on wire':>14} {'sql (process)':>14} {'DuckDB (process)':>17} {'DuckDB (kept)':>14}")
        for name, q in run.dashboard_queries(args.days).items():
            with psycopg.connect(dsn, autocommit=True) as conn:
                t0 = time.perf_counter()
                rows = len(conn.execute(q).fetchall())
                first = time.perf_counter() - t0
                text, binary_ = [], []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    n = len(conn.execute(q).fetchall())
                    text.append(time.perf_counter() - t0)
                    assert n == rows
                    t0 = time.perf_counter()
                    n = len(conn.execute(q, binary=True).fetchall())
                    binary_.append(time.perf_counter() - t0)
                    assert n == rows
            script = setup + f"print(con.sql({q!r}).to_arrow_table().num_rows)\n"
            process, duck_process = [], []
            for _ in range(args.runs):
                for cmd, into in (
                    ([binary, "--lake", args.lake, "sql", "--format", "csv", q], process),
                    ([duck_python, "-c", script], duck_process),
                ):
                    seconds, _, outcome = run.measure(cmd, 600)
                    assert outcome == "ok", f"{cmd[0]}: {outcome}"
                    into.append(seconds)
            kept = (
                "import time,statistics\n" + setup
                + f"con.sql({q!r}).to_arrow_table()\nts=[]\nfor _ in range({args.runs}):\n"
                + f"    t0=time.perf_counter(); n=con.sql({q!r}).to_arrow_table().num_rows; ts.append(time.perf_counter()-t0)\n"
                + "print(n, statistics.median(ts))\n"
            )
            res = subprocess.run([duck_python, "-c", kept], capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(f"DuckDB (kept connection) failed: {res.stderr}")
            n, duck_kept = res.stdout.split()
            assert int(n) == rows, f"{name}: DuckDB {n} rows, the wire {rows}"
            med = statistics.median
            print(
                f"{name:40} {med(text):>9.3f}s {med(binary_):>11.3f}s {first:>13.3f}s {med(process):>13.3f}s {med(duck_process):>16.3f}s {float(duck_kept):>13.3f}s  ({rows} rows)"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
