#!/usr/bin/env python3
"""Load on `cryptolake serve`: N concurrent clients for a fixed time on loopback against every
read endpoint (candles 1h and 1d, overview, symbols, freshness, runs, gaps, quality and
/metrics) of a benchmark lake (the medium one by default), with one hostile
SQL query (a cross join of silver with itself, three times) sent while the load runs. Prints
p50/p99 latency per endpoint, errors, requests per second, the hostile query's status and time,
and the server's peak RSS: what BENCHMARKS.md records.

  python3 bench/load.py                       # bench/work/40x365/lake, 50 clients, 60 s
  python3 bench/load.py --lake PATH --clients 50 --seconds 60 --binary target/release/cryptolake
  python3 bench/load.py --seaweedfs 40x365    # the same on SeaweedFS: a lake of 40 symbols x 365
                                              # days generated and built there, one warm-up pass
"""

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", default=str(ROOT / "bench/work/40x365/lake"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--non-yielding", type=int, default=0, metavar="N",
                    help="also post N statements that compute for long stretches without yielding "
                         "(levenshtein over 2 M pairs of 100-character texts, each batch a quarter "
                         "second of one core), each timed against the 20 s limit")
    ap.add_argument("--binary", default=None, help="a cryptolake binary (default: build --release)")
    ap.add_argument("--seaweedfs", metavar="SYMBOLSxDAYS", default=None,
                    help="serve a lake of that size generated and built on SeaweedFS (from .venv), after one warm-up pass")
    args = ap.parse_args()
    if args.seaweedfs:
        import stores
        symbols, days = (int(x) for x in args.seaweedfs.split("x"))
        with stores.seaweedfs("bench") as s3env:
            return run(args, "s3://bench/lake", s3env, (symbols, days))
    return run(args, args.lake, {}, None)


def run(args, lake, s3env, generate):

    binary = args.binary
    if binary is None:
        target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/cryptolake-target"))
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "cryptolake"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=target))
        binary = str(Path(target) / "release/cryptolake")
    # A time limit short enough to see the hostile query end within the run.
    env = dict(os.environ, CRYPTOLAKE_LOG="warn", CRYPTOLAKE_QUERY_TIMEOUT="20s", **s3env)
    if generate:
        symbols, days = generate
        started = time.monotonic()
        for step in (["bench", "generate", "--symbols", str(symbols), "--days", str(days)], ["silver"], ["gold"]):
            subprocess.run([binary, "--lake", lake, *step], check=True, env=env, capture_output=True)
        print(f"== {lake}: {symbols} x {days} generated and built on SeaweedFS in {time.monotonic() - started:.0f} s", flush=True)
    server = subprocess.Popen([binary, "--lake", lake, "serve", "--no-schedule", "--http", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True, env=env)
    line = server.stdout.readline()
    assert line.startswith("serving the dashboard on http://"), line
    host, port = line.split("http://")[1].split("/")[0].split(":")
    port = int(port)

    def get(conn, path, method="GET", body=None):
        started = time.perf_counter()
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, time.perf_counter() - started, data

    conn = http.client.HTTPConnection(host, port, timeout=120)
    # Cold start: the first request the server gets, a year of daily candles of the benchmark's
    # first symbol (the read model is still reading ahead).
    status, cold, data = get(conn, "/api/v1/candles?exchange=binance&symbol=S0001-USDT&interval=1d&from=2024-01-01&to=2025-01-01")
    print(f"cold start: a year of daily candles in {cold * 1000:.1f} ms (HTTP {status}, {len(json.loads(data)) if status == 200 else 0} days)")
    _, _, data = get(conn, "/api/v1/symbols")
    symbols = json.loads(data)
    pairs = [(s["exchange"], s["symbol"], s["first_hour"], s["last_hour"]) for s in symbols]
    first = min(p[2] for p in pairs)[:10]
    last = max(p[3] for p in pairs)[:10]
    if generate:
        # One warm-up pass: every symbol's daily candles, and one symbol's every hour (which
        # reads every silver partition).
        start = min(p[2] for p in pairs)[:10]
        for ex, sym, _, _ in pairs:
            get(conn, f"/api/v1/candles?exchange={ex}&symbol={sym}&interval=1d&from={start}")
        ex, sym, _, _ = pairs[0]
        get(conn, f"/api/v1/candles?exchange={ex}&symbol={sym}&interval=1h&from={start}&limit=20000")
        print("== warm-up pass done", flush=True)
    print(f"lake {lake}: {len(pairs)} symbols, {first} to {last}; {args.clients} clients for {args.seconds:.0f} s")

    others = [("overview", "/api/v1/overview"), ("symbols", "/api/v1/symbols"),
              ("freshness", "/api/v1/freshness"), ("runs", "/api/v1/runs"), ("gaps", "/api/v1/gaps"),
              ("quality", "/api/v1/quality"), ("metrics", "/metrics")]

    def pick(rng):
        r = rng.random()
        if r < 0.3:
            return rng.choice(others)
        ex, sym, _, end = rng.choice(pairs)
        if r < 0.65:
            # A page of 500 hours ending somewhere in the history: a chart opening or scrolling.
            day = rng.randrange(0, 365)
            to = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.mktime(time.strptime(first, "%Y-%m-%d")) + (day + 21) * 86400))
            return "candles_1h", f"/api/v1/candles?exchange={ex}&symbol={sym}&interval=1h&limit=500&to={to}"
        return "candles_1d", f"/api/v1/candles?exchange={ex}&symbol={sym}&interval=1d&from={first}"

    stop_at = time.monotonic() + args.seconds
    results = {}
    errors = []
    lock = threading.Lock()

    def client(seed):
        rng = random.Random(seed)
        c = http.client.HTTPConnection(host, port, timeout=120)
        mine = {}
        while time.monotonic() < stop_at:
            name, path = pick(rng)
            try:
                status, secs, _ = get(c, path)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                with lock:
                    errors.append(f"{path}: {e}")
                c = http.client.HTTPConnection(host, port, timeout=120)
                continue
            if status != 200:
                with lock:
                    errors.append(f"{path}: HTTP {status}")
            mine.setdefault(name, []).append(secs)
        with lock:
            for k, v in mine.items():
                results.setdefault(k, []).extend(v)

    hostile = {}

    def attack():
        time.sleep(min(10, args.seconds / 4))
        c = http.client.HTTPConnection(host, port, timeout=600)
        sql = ("SELECT count(*) FROM crypto_analytics.ohlcv_1h a, crypto_analytics.ohlcv_1h b, "
               "crypto_analytics.ohlcv_1h c WHERE a.close + b.close + c.close > 0")
        status, secs, data = get(c, "/api/v1/sql", "POST", sql)
        hostile.update(status=status, seconds=secs, body=data.decode()[:200])

    stuck = []

    def non_yielding(i):
        time.sleep(min(10, args.seconds / 4))
        c = http.client.HTTPConnection(host, port, timeout=600)
        # Each batch under the cap on levenshtein's work (4e8 cells), the whole far past 20 s.
        sql = ("SELECT sum(levenshtein(repeat('a', 94) || CAST(n.value AS VARCHAR), repeat('b', 100))) "
               "FROM range(2000000) n")
        status, secs, data = get(c, "/api/v1/sql", "POST", sql)
        with lock:
            stuck.append((status, secs, data.decode()[:160]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=attack))
    threads.extend(threading.Thread(target=non_yielding, args=(i,)) for i in range(args.non_yielding))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    rss = peak_rss(server.pid)
    server.terminate()
    server.wait(timeout=60)

    total = sum(len(v) for v in results.values())
    print(f"{total} requests in {wall:.1f} s ({total / wall:.0f}/s), {len(errors)} errors; server peak RSS {rss / 2**20:.0f} MiB")
    print("| endpoint | requests | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---|---|---|---|")
    for name in sorted(results):
        v = sorted(results[name])
        p = lambda q: v[min(len(v) - 1, int(q * len(v)))] * 1000  # noqa: E731
        print(f"| {name} | {len(v)} | {statistics.median(v) * 1000:.1f} | {p(0.99):.1f} | {v[-1] * 1000:.1f} |")
    print(f"hostile SQL during the load: HTTP {hostile.get('status')} in {hostile.get('seconds', 0):.1f} s: {hostile.get('body')}")
    for status, secs, body in stuck:
        print(f"non-yielding statement: HTTP {status} in {secs:.1f} s: {body}")
    for e in errors[:10]:
        print("error:", e)
    return 0 if not errors and hostile.get("status") == 422 else 1


if __name__ == "__main__":
    raise SystemExit(main())
