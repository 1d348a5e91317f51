#!/usr/bin/env python3
"""The benchmark runner: one command, same bronze input, cryptolake against DuckDB, Polars and
pandas/pyarrow doing the same silver + gold job. Checks that every output agrees with
cryptolake's and prints wall time, throughput and peak RSS (median of --runs).

  python3 bench/run.py --scale small          # ~100k candles (CI smoke size)
  python3 bench/run.py --scale medium         # 40 symbols x 365 days, ~21M candles
  python3 bench/run.py --scale large          # 200 symbols x 365 days, ~105M candles
  python3 bench/run.py --symbols 10 --days 30 --runs 5
  python3 bench/run.py --scale medium --incremental --queries   # everything BENCHMARKS.md reports

--stores local,seaweedfs,throttled times the first silver + gold build on local disk, on SeaweedFS (a
real S3 server on loopback) and on local disk with 20 ms on every GET and LIST and 30 ms on every PUT,
with the requests each made. --memory 10000,100000,1000000 measures the peak RSS of first builds of
that many small bronze objects. --cores times the first build pinned to one core and to two.

--incremental times one hourly run's worth of new bronze on the lake holding the whole history
against the same hour on an empty lake, as a day of hourly runs: the hours between runs pass on
a simulated clock (the binary's injected clock, `--clock-at`), so the builds see what a real
hourly schedule leaves them. --engines '' skips the full-build table. --queries times dashboard queries through
`cryptolake sql` and through DuckDB over the same files (both as fresh processes). --api serves the
lake read-only (`cryptolake serve --no-schedule`) and loads its candles API with wrk (50
connections, 2 threads, 20 s): a week of 5-minute candles of one symbol, latency percentiles and
requests per second.

The peers run from bench/.venv (created on first use, pinned). A peer that exceeds
--cap-seconds or runs out of memory is reported as such. Results go to WORK/results.json;
The table it prints is what BENCHMARKS.md records.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
PINS = ["duckdb==2.0.0", "polars==2.1.0", "pandas==3.1.1", "pyarrow==26.0.1"]
SCALES = {"small": (10, 7), "medium": (40, 365), "large": (200, 365)}


def venv_python():
    py = VENV / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", "import duckdb, polars, pandas, pyarrow"], capture_output=True).returncode:
        print("== creating bench/.venv with " + " ".join(PINS), flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PINS], check=True)
    return str(py)


# A run whose resident memory passes this is stopped and reported as out of memory, before the
# kernel's OOM killer picks a victim on the shared machine (24 GiB, no swap).
MEMORY_LIMIT = 20 * 2**30


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd, cap, env=None, stdout=subprocess.DEVNULL, cpu=None):
    """Runs cmd; returns (seconds, peak RSS bytes, outcome). The clock stops the moment the
    process is reaped (a blocking wait); a watchdog thread enforces the time cap and the memory
    limit, so polling does not blur the timing of sub-second runs. With `cpu` (a list), the
    run's user and system CPU seconds are appended to it as a pair."""
    errf = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-stderr-{os.getpid()}.txt", "w+b")
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=errf, env=env, start_new_session=True)
    stop = threading.Event()
    verdict = []

    def watch():
        while not stop.wait(0.02):
            if time.monotonic() - start > cap:
                verdict.append("over the time cap")
            elif rss_bytes(p.pid) > MEMORY_LIMIT:
                verdict.append(f"out of memory (over {MEMORY_LIMIT / 2**30:.0f} GiB)")
            else:
                continue
            os.killpg(p.pid, signal.SIGKILL)
            return

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.monotonic() - start
    stop.set()
    watchdog.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.seek(0)
    err = errf.read().decode(errors="replace")
    errf.close()
    os.unlink(errf.name)
    rss = usage.ru_maxrss * 1024
    if cpu is not None:
        cpu.append((usage.ru_utime, usage.ru_stime))
    if verdict:
        return (cap if verdict[0] == "over the time cap" else seconds), rss, verdict[0]
    code = p.returncode
    if code == -signal.SIGKILL or "MemoryError" in err or "Out of Memory" in err:
        return seconds, rss, "out of memory"
    if code != 0:
        return seconds, rss, f"failed: {err.strip().splitlines()[-1] if err.strip() else code}"
    return seconds, rss, "ok"


START = "2024-01-01T00:00:00Z"


def hour_after(days, i):
    import datetime
    t = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(days=days, hours=i)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def transform(binary, lake, cap, env, expect_new=False, clock=()):
    """Silver then gold, as the hourly job runs them. With expect_new, fails unless silver
    picked up new bronze (a measurement of a build that found nothing would be worthless)."""
    out = lake.parent / "silver-stdout.txt"
    with open(out, "wb") as f:
        s1, r1, o1 = measure([binary, "--lake", str(lake), *clock, "silver"], cap, env, stdout=f)
    if expect_new:
        text = out.read_text()
        words = text.split("silver: ", 1)[-1].split()
        if not words or not words[0].isdigit() or int(words[0]) == 0:
            sys.exit(f"incremental: silver found no new bronze in {lake}:\n{text}")
    s2, r2, o2 = measure([binary, "--lake", str(lake), *clock, "gold"], cap, env)
    if o1 != "ok" or o2 != "ok":
        sys.exit(f"incremental: a build failed in {lake}: {o1}, {o2}")
    return s1 + s2, max(r1, r2)


class Clock:
    """The wall clock the hourly runs see. Each simulated hour is an hour later on this clock
    (the binary's injected clock, `--clock-at`), so manifest entries land in their own hour
    folders and each build's watermark is an hour after the last one, as in a real hourly
    schedule; the processes themselves run at full speed."""

    def __init__(self, lake):
        import datetime
        # After every manifest entry and watermark already in the lake (earlier invocations
        # may have simulated hours ahead of the real clock).
        latest = datetime.datetime.now(datetime.timezone.utc)
        manifest = lake / "_manifest" / "bronze"
        for day in manifest.iterdir() if manifest.exists() else []:
            for hour in day.iterdir():
                if hour.is_dir() and hour.name.isdigit():
                    t = datetime.datetime.strptime(f"{day.name} {hour.name}", "%Y-%m-%d %H").replace(tzinfo=datetime.timezone.utc)
                    latest = max(latest, t + datetime.timedelta(hours=1))
        state = lake / "_state" / "silver" / "ohlcv_1h.json"
        if state.exists():
            w = json.loads(state.read_text()).get("watermark")
            if w:
                latest = max(latest, datetime.datetime.fromisoformat(w.replace("Z", "+00:00")))
        self.base = latest.replace(minute=0, second=0, microsecond=0) + datetime.timedelta(hours=2)

    def args(self, hour, minute):
        import datetime
        t = self.base + datetime.timedelta(hours=hour, minutes=minute)
        return ["--clock-at", t.strftime("%Y-%m-%dT%H:%M:%SZ")]


def generate_hour(binary, lake, symbols, at, env, clock=()):
    """One hourly run's worth of bronze, written now (on the simulated clock) as ingestion writes it."""
    subprocess.run([binary, "--lake", str(lake), *clock, "bench", "generate", "--symbols", str(symbols), "--hours", "1",
                    "--from", at, "--written-at", "now"], check=True, capture_output=True, env=env)


def settle():
    """Waits for the file system's pending writes, then a moment for its background work."""
    os.sync()
    time.sleep(0.5)


def repeated(lake, aside, repeats, build, trash):
    """`build()` run `repeats` times on `lake` as it is now, the lake put back between runs
    from hard links kept at `aside`; the lake is left as the last run leaves it. Returns each
    run's result.

    The lakes a repeat replaces are moved into `trash` (on the same file system), not removed:
    the caller empties it between measured days (`empty_trash`). Removing a lake frees thousands of
    directory inodes, and for a while after (ext4 keeps recently freed inodes aside) every file
    a build creates costs a scan past them, which an hourly job on a real lake never pays."""
    if repeats <= 1:
        return [build()]
    trash.mkdir(parents=True, exist_ok=True)
    throw = lambda d: d.exists() and set_aside(d, trash)
    throw(aside)
    subprocess.run(["cp", "-al", str(lake), str(aside)], check=True)
    results = []
    for k in range(repeats):
        if k > 0:
            # Put back by renames, so that a run stopped at any point leaves a whole lake.
            fresh, old = lake.with_name(lake.name + ".next"), lake.with_name(lake.name + ".last")
            for d in (fresh, old):
                throw(d)
            subprocess.run(["cp", "-al", str(aside), str(fresh)], check=True)
            lake.rename(old)
            fresh.rename(lake)
            throw(old)
        # Every build starts once the file system has written back the copy, so no build
        # pays for that work and all start alike.
        settle()
        results.append(build())
    throw(aside)
    return results


def set_aside(d, trash):
    """Moves `d` into `trash` under a name of its own."""
    d.rename(trash / f"{len(list(trash.iterdir()))}-{d.name}")


def empty_trash(trash, wait):
    """Removes what `repeated` moved into `trash`; with `wait`, then waits until inodes freed
    by the removal are no longer recent to ext4 (`vm.dirty_expire_centisecs`, 30 s by default),
    so that the builds measured next do not scan past them."""
    removed = time.monotonic()
    if not any(trash.iterdir()):
        return
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir(parents=True)
    if wait:
        try:
            recent = int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100
        except (OSError, ValueError):
            recent = 30.0
        time.sleep(max(0.0, recent + 1 - (time.monotonic() - removed)))


def incremental(binary, work, lake, symbols, days, runs, cap, env, repeats=1):
    """One more hour of bronze for every symbol on the lake holding the history, against the
    same hour on an empty lake. Every simulated hour runs as the hourly job does: ingest at
    :05, silver and gold at :06. Measured for the first hour of a new day and for its last
    hour, when the day already holds 23 hourly objects per symbol.

    With `repeats` above one, each measured hour is built that many times from the same lake:
    the lake is hard-linked aside before the build and put back before each repeat (builds
    replace files by renaming, never write into one, so the links stay as they were). A
    single build of a few tens of milliseconds varies by a third on a shared machine; the
    median of several is what can be compared with a target."""
    first, last, empty = [], [], []
    # What the repeats replace, removed between measured days (see `repeated`).
    trash = work / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    empty_trash(trash, wait=True)  # a stopped run's
    clock = Clock(lake)
    # The full lake as an hourly job finds it: silver and gold up to date.
    transform(binary, lake, cap, env, clock=clock.args(0, 6))
    # New market days after the newest in silver (an earlier invocation may have added some).
    import datetime
    held = [p.name[5:] for p in (lake / "silver" / "ohlcv_1h").glob("date=*")]
    newest = max((datetime.date.fromisoformat(d) for d in held), default=datetime.date(2024, 1, 1))
    start_day = max(days, (newest - datetime.date(2024, 1, 1)).days + 1)
    for i in range(runs):
        day = start_day + i
        for h in range(24):
            at = 1 + i * 24 + h
            generate_hour(binary, lake, symbols, hour_after(day, h), env, clock.args(at, 5))
            build = lambda: transform(binary, lake, cap, env, expect_new=True, clock=clock.args(at, 6))
            if h == 0:
                first.extend(repeated(lake, work / "hour-before", repeats, build, trash))
            elif h == 23:
                last.extend(repeated(lake, work / "hour-before", repeats, build, trash))
            else:
                build()
        fresh = work / f"empty-{i}"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        at = 1 + i * 24 + 23
        generate_hour(binary, fresh / "lake", symbols, hour_after(day, 23), env, clock.args(at, 5))
        build = lambda: transform(binary, fresh / "lake", cap, env, expect_new=True, clock=clock.args(at, 6))
        empty.extend(repeated(fresh / "lake", work / "empty-before", repeats, build, trash))
        set_aside(fresh, trash)
        # Emptied once a day, so that it never holds more than a day's lakes (their directory
        # entries add up on a large lake), and the next day's builds start once ext4 no longer
        # counts the freed inodes as recent.
        empty_trash(trash, wait=i + 1 < runs)
    trash.rmdir()
    f = statistics.median(r[0] for r in first)
    l = statistics.median(r[0] for r in last)
    e = statistics.median(r[0] for r in empty)
    rss = max(r[1] for r in first + last) / 2**20
    spread = lambda rs: f"{min(r[0] for r in rs):.3f}-{max(r[0] for r in rs):.3f}"
    print(f"\nincremental: one hour of new bronze for {symbols} symbols on the lake holding {days} days: "
          f"first hour of a day {f:.3f} s ({f / e:.2f}x), last hour of a day {l:.3f} s ({l / e:.2f}x); "
          f"the same hour on an empty lake {e:.3f} s (peak RSS {rss:.0f} MiB; medians of {runs} simulated days"
          f"{f', each hour built {repeats} times' if repeats > 1 else ''}; "
          f"ranges {spread(first)}, {spread(last)}, {spread(empty)} s)")
    return {"first_hour_seconds": f, "last_hour_seconds": l, "empty_lake_seconds": e,
            "first_hour_ratio": f / e, "last_hour_ratio": l / e,
            "samples": {"first_hour": [r[0] for r in first], "last_hour": [r[0] for r in last], "empty_lake": [r[0] for r in empty]}}


def dashboard_queries(days):
    """The dashboard queries, over the last 90 days (and the last day) of a lake of `days` days from 2024-01-01."""
    import datetime
    last = datetime.date(2024, 1, 1) + datetime.timedelta(days=days - 1)
    first = last - datetime.timedelta(days=89)
    return {
        "one symbol, 90 days of hourly candles": "SELECT open_time, open, high, low, close, volume FROM crypto_analytics.ohlcv_1h "
        f"WHERE symbol = 'S0001-USDT' AND date BETWEEN DATE '{first}' AND DATE '{last}' ORDER BY open_time",
        "one symbol, one day of minutes": "SELECT open_time, open, high, low, close, volume FROM crypto_analytics.ohlcv_1m "
        f"WHERE symbol = 'S0001-USDT' AND date = DATE '{last}' ORDER BY open_time",
        "top volume by day, all symbols": "SELECT date, symbol, quote_volume FROM (SELECT date, symbol, quote_volume, "
        "row_number() OVER (PARTITION BY date ORDER BY quote_volume DESC) AS r FROM crypto_gold.ohlcv_1d) WHERE r = 1 ORDER BY date",
    }


def duckdb_setup(binary, lake):
    """Python lines that give a DuckDB connection `con` the lake's views, from `catalog ddl`."""
    ddl = subprocess.run([binary, "--lake", str(lake), "catalog", "ddl", "--engine", "duckdb"], check=True, capture_output=True, text=True).stdout
    return "import duckdb\ncon=duckdb.connect()\n" + "".join(f"con.execute({stmt.strip()!r})\n" for stmt in ddl.split(";") if stmt.strip())


def queries(binary, python, lake, days, runs, cap, env):
    qs = dashboard_queries(days)
    setup = duckdb_setup(binary, lake)
    out = {}
    print()
    for name, q in qs.items():
        script = setup + f"print(con.sql({q!r}).to_arrow_table().num_rows)\n"
        ours, theirs = [], []
        for _ in range(runs):
            # Each run must succeed: a failed process's time is not a query's time.
            for cmd, env_, into in (
                ([binary, "--lake", str(lake), "sql", "--format", "csv", q], env, ours),
                ([python, "-c", script], None, theirs),
            ):
                seconds, _, outcome = measure(cmd, cap, env_)
                if outcome != "ok":
                    raise SystemExit(f"query {name}: {cmd[0]} {outcome}")
                into.append(seconds)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"query {name}: cryptolake sql {a:.3f} s, DuckDB {b:.3f} s ({a / b:.2f}x)")
        out[name] = {"cryptolake_seconds": a, "duckdb_seconds": b}
    return out


def wrk_binary():
    """wrk's path; installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if not found and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("== installing wrk (apt-get)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True, env=env)
        found = shutil.which("wrk")
    return found


def wrk_seconds(value):
    """wrk's printed duration (`812.00us`, `1.20ms`, `2.00s`, `1.00m`) in seconds."""
    import re
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if not m:
        raise ValueError(f"wrk duration {value!r}")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


def parse_wrk(text):
    """Latency percentiles (seconds), requests/s, requests, and the errors wrk reports, from `wrk --latency`."""
    import re
    out = {"latency_seconds": {}}
    in_distribution = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Latency Distribution"):
            in_distribution = True
            continue
        m = re.fullmatch(r"(\d+)%\s+(\S+)", line)
        if in_distribution and m:
            out["latency_seconds"][m.group(1)] = wrk_seconds(m.group(2))
            continue
        in_distribution = False
        if m := re.match(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", line):
            out["requests"] = int(m.group(1))
            out["duration_seconds"] = wrk_seconds(m.group(2))
            out["read"] = m.group(3)
        elif m := re.match(r"Requests/sec:\s+([\d.]+)", line):
            out["requests_per_second"] = float(m.group(1))
        elif m := re.match(r"Transfer/sec:\s+(\S+)", line):
            out["transfer_per_second"] = m.group(1)
        elif m := re.match(r"Socket errors: (.*)", line):
            out["socket_errors"] = m.group(1)
        elif m := re.match(r"Non-2xx or 3xx responses: (\d+)", line):
            out["non_2xx_responses"] = int(m.group(1))
    if "requests_per_second" not in out or not all(k in out["latency_seconds"] for k in ("50", "90", "99")):
        raise ValueError("wrk's output has no latency distribution or requests/s:\n" + text)
    return out


def api(binary, work, lake, days, env, connections=50, threads=2, duration=20):
    """The candles API under load: `cryptolake serve` on the lake, read-only (no scheduled runs
    write to it meanwhile), then wrk against a week of 5-minute candles of one symbol (the
    last 7 days of the lake: 2016 bars). The answer is checked once first (also the warm-up
    request); the server is stopped with SIGTERM afterwards."""
    import datetime
    import socket
    import urllib.error
    import urllib.request

    last = datetime.date(2024, 1, 1) + datetime.timedelta(days=days - 1)
    start, end = last - datetime.timedelta(days=6), last + datetime.timedelta(days=1)
    bars = (end - start).days * 24 * 12
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    path = (f"/api/v1/candles?exchange=binance&symbol=S0001-USDT&interval=5m"
            f"&from={start}T00:00:00Z&to={end}T00:00:00Z&limit=20000")
    result = {"url": path, "connections": connections, "threads": threads, "duration_seconds": duration}
    print(f"\napi: GET {path} (wrk -t{threads} -c{connections} -d{duration}s)", flush=True)

    def failed(why):
        print(f"api: {why}", flush=True)
        result["error"] = why
        return result

    wrk = wrk_binary()
    if not wrk:
        return failed("wrk is not installed (apt-get install wrk)")
    log_path = work / "serve-log.txt"
    log = open(log_path, "wb")
    server = subprocess.Popen([binary, "--lake", str(lake), "serve", "--no-schedule", "--http", f"127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                return failed(f"the server exited ({server.returncode}): {log_path.read_text(errors='replace').strip()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                return failed("/readyz did not answer 200 within 120 s")
            time.sleep(0.1)
        t = time.monotonic()
        try:
            with urllib.request.urlopen(base + path, timeout=120) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            return failed(f"HTTP {e.code}: {e.read().decode(errors='replace')[:500]}")
        result["first_request_seconds"] = time.monotonic() - t
        try:
            answer = json.loads(body)
        except ValueError:
            return failed(f"the answer is not JSON: {body[:300]!r}")
        # The generated market has gaps, and a bucket without any minute is left out (never
        # filled): a few of the week's buckets may be missing, never more than it has.
        if not isinstance(answer, list) or not 0.95 * bars <= len(answer) <= bars or not all(isinstance(x, dict) for x in answer):
            what = f"a JSON array of {len(answer)} items" if isinstance(answer, list) else f"{str(answer)[:300]}"
            return failed(f"expected a JSON array of at most {bars} candles (at least 95% of them), got {what}")
        result["bars"] = len(answer)
        result["response_bytes"] = len(body)
        w = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", base + path],
                           capture_output=True, text=True)
        if w.returncode != 0:
            return failed(f"wrk failed ({w.returncode}): {w.stderr.strip() or w.stdout.strip()}")
        try:
            result.update(parse_wrk(w.stdout))
        except ValueError as e:
            return failed(str(e))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("api: the server did not stop within 30 s of SIGTERM; killed", flush=True)
                server.kill()
                server.wait()
        log.close()
    lat = result["latency_seconds"]
    ms = lambda q: f"{lat[q] * 1e3:.2f} ms"
    errors = []
    if result.get("non_2xx_responses"):
        errors.append(f"{result['non_2xx_responses']} non-2xx responses")
    if result.get("socket_errors"):
        errors.append(f"socket errors: {result['socket_errors']}")
    print(f"api: {result['requests_per_second']:,.0f} requests/s ({result['requests']:,} in {result['duration_seconds']:.1f} s, "
          f"{result['response_bytes'] / 1e3:,.0f} kB each); latency p50 {ms('50')}, p90 {ms('90')}, p99 {ms('99')}; "
          f"first request {result['first_request_seconds'] * 1e3:.0f} ms" + (f"; {', '.join(errors)}" if errors else ""), flush=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", choices=SCALES, default=None)
    ap.add_argument("--symbols", type=int)
    ap.add_argument("--days", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engines", default="cryptolake,duckdb,polars,pandas")
    ap.add_argument("--cap-seconds", type=float, default=3600)
    ap.add_argument("--budget-seconds", type=float, default=900,
                    help="an engine is not run again once its runs so far took this long (the table says how many ran)")
    ap.add_argument("--work", default=str(BENCH / "work"))
    ap.add_argument("--binary", help="a cryptolake binary (default: build --release)")
    ap.add_argument("--incremental", action="store_true")
    ap.add_argument("--incremental-days", type=int, default=7,
                    help="simulated days of hourly runs for --incremental (one sample of each measurement per day)")
    ap.add_argument("--incremental-repeats", type=int, default=5,
                    help="builds of each measured hour for --incremental, from the same lake (their median counts)")
    ap.add_argument("--queries", action="store_true")
    ap.add_argument("--api", action="store_true",
                    help="load the candles API of `cryptolake serve` (read-only) with wrk: latency percentiles and requests/s")
    ap.add_argument("--python", help="a python with duckdb, polars, pandas and pyarrow (default: bench/.venv)")
    ap.add_argument("--stores", help="the first silver + gold build on each of these stores, side by side: "
                    "local, seaweedfs (S3 on loopback), throttled (local disk + simulated S3 latency)")
    ap.add_argument("--memory", help="peak RSS of first builds at these numbers of small bronze objects (10000,100000,1000000)")
    ap.add_argument("--cores", action="store_true", help="the first build pinned to 1 core and to 2 (taskset)")
    args = ap.parse_args()
    symbols, days = SCALES[args.scale or "small"]
    symbols, days = args.symbols or symbols, args.days or days

    python = args.python or venv_python()
    binary = args.binary
    if not binary:
        print("== cargo build --release -p cryptolake", flush=True)
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "cryptolake"], cwd=ROOT, check=True)
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        binary = str(target / "release" / "cryptolake")

    work = Path(args.work) / f"{symbols}x{days}"
    lake = work / "lake"
    marker = work / "generated.json"
    if not marker.exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print(f"== generating bronze: {symbols} symbols x {days} days", flush=True)
        out = subprocess.run([binary, "--lake", str(lake), "bench", "generate", "--symbols", str(symbols), "--days", str(days)],
                             check=True, capture_output=True, text=True).stdout
        marker.write_text(out)
    generated = json.loads(marker.read_text())
    candles, mb = generated["candles"], generated["bytes"] / 1e6
    print(f"== input: {candles:,} candles, {generated['objects']:,} objects, {mb:,.0f} MB of bronze", flush=True)

    env = dict(os.environ, CRYPTOLAKE_LOG="error")
    results = {}
    for engine in [e for e in args.engines.split(",") if e]:
        runs = []
        for i in range(args.runs):
            out = work / f"out-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            if engine == "cryptolake":
                for d in ("silver", "gold", "quarantine", "ops", "_state/silver", "_state/gold", "_locks"):
                    shutil.rmtree(lake / d, ignore_errors=True)
                s1, r1, o1 = measure([binary, "--lake", str(lake), "silver"], args.cap_seconds, env)
                s2, r2, o2 = measure([binary, "--lake", str(lake), "gold"], args.cap_seconds, env)
                run = (s1 + s2, max(r1, r2), o1 if o1 != "ok" else o2)
            else:
                out.mkdir(parents=True)
                run = measure([python, str(BENCH / "jobs" / f"{engine}_job.py"), str(lake / "bronze"), str(out)], args.cap_seconds)
            print(f"   {engine:10} run {i + 1}: {run[0]:8.2f} s, peak RSS {run[1] / 2**20:7.0f} MiB, {run[2]}", flush=True)
            runs.append(run)
            if run[2] != "ok" or sum(r[0] for r in runs) >= args.budget_seconds:
                break
        ok = [r for r in runs if r[2] == "ok"]
        agree = None
        if ok and engine != "cryptolake":
            c = subprocess.run([python, str(BENCH / "compare.py"), str(lake), str(work / f"out-{engine}")], capture_output=True, text=True)
            agree = c.returncode == 0
            print("   " + c.stdout.strip().replace("\n", "\n   "), flush=True)
        results[engine] = {
            "seconds": statistics.median(r[0] for r in ok) if ok else None,
            "peak_rss_bytes": max(r[1] for r in ok) if ok else max(r[1] for r in runs),
            "outcome": "ok" if ok else runs[-1][2],
            "agrees": agree,
            "runs": len(ok),
        }

    base = results.get("cryptolake", {}).get("seconds")
    lines = [
        f"{symbols} symbols x {days} days: {candles:,} candles, {mb:,.0f} MB bronze ({generated['objects']:,} objects); "
        f"median of up to {args.runs} runs; {platform.machine()}, {os.cpu_count()} cores",
        "",
        "| engine | wall (s) | runs | candles/s | bronze MB/s | peak RSS (MiB) | time vs cryptolake | output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in results.items():
        s = r["seconds"]
        if s is None:
            lines.append(f"| {engine} | {r['outcome']} | | | | {r['peak_rss_bytes'] / 2**20:.0f} | | |")
            continue
        ratio = f"{s / base:.2f}x" if base else ""
        agree = "reference" if engine == "cryptolake" else ("agrees" if r["agrees"] else "DIFFERS")
        lines.append(f"| {engine} | {s:.2f} | {r['runs']} | {candles / s:,.0f} | {mb / s:,.1f} | {r['peak_rss_bytes'] / 2**20:.0f} | {ratio} | {agree} |")
    print("\n" + "\n".join(lines))
    extra = {}
    import stores
    if args.stores:
        extra["stores"] = stores.compare(measure, binary, work, symbols, days, args.stores.split(","), args.runs, args.cap_seconds, env)
    if args.memory:
        extra["memory"] = stores.memory(measure, binary, Path(args.work), [int(n) for n in args.memory.split(",")], args.cap_seconds, env)
    if args.cores:
        extra["cores"] = stores.cores(measure, binary, lake, args.runs, args.cap_seconds, env)
    if args.incremental:
        extra["incremental"] = incremental(binary, work, lake, symbols, days, args.incremental_days, args.cap_seconds, env,
                                           args.incremental_repeats)
    if args.queries:
        extra["queries"] = queries(binary, python, lake, days, args.runs, args.cap_seconds, env)
    if args.api:
        extra["api"] = api(binary, work, lake, days, env)
    (work / "results.json").write_text(json.dumps({"generated": generated, "results": results, **extra}, indent=1))
    if any(r.get("agrees") is False for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
