#!/usr/bin/env python3
"""The requests an hourly run makes to S3, measured: the hourly job (`cryptolake run`: ingest
every enabled exchange, silver with the gap report and checks, gold) against SeaweedFS, with
the simulated exchange on loopback serving Binance, Coinbase and Kraken. A first run ingests
8 hours of history (the simulated market stands at the last run's hour, and Kraken serves its last 12
hours); then each of --runs hourly runs, an hour apart on the injected clock, is
counted by step (GET, HEAD, PUT, LIST, DELETE, from each step's run record). docs/aws.md's cost
table is these counts scaled to its symbols.

  python3 bench/hourly.py --binary target/release/cryptolake --runs 3
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stores  # noqa: E402

START = datetime.datetime(2025, 6, 2, 0, 5, tzinfo=datetime.timezone.utc)


def at(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--all-symbols", action="store_true",
                    help="every symbol the simulated market lists (10) instead of the default two per exchange")
    args = ap.parse_args()
    binary = args.binary
    end = START + datetime.timedelta(hours=args.runs)
    port = stores.free_ports(1)[0]
    sim = subprocess.Popen([binary, "--clock-at", at(end), "simulate", "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        sim.stdout.readline()
        with stores.seaweedfs("hourly") as s3env:
            url = f"http://127.0.0.1:{port}"
            env = dict(os.environ, **s3env, CRYPTOLAKE_LOG="error", CRYPTOLAKE_LAKE="s3://hourly/lake",
                       CRYPTOLAKE_INGEST_LOOKBACK="8h")
            for exchange in ("BINANCE", "COINBASE", "KRAKEN"):
                env[f"CRYPTOLAKE_{exchange}_ENABLED"] = "true"
                env[f"CRYPTOLAKE_{exchange}_BASE_URL"] = url
                if args.all_symbols:
                    quote = "USDT" if exchange == "BINANCE" else "USD"
                    coins = ["BTC", "ETH", "SOL"] + (["DOGE"] if exchange == "BINANCE" else [])
                    env[f"CRYPTOLAKE_{exchange}_SYMBOLS"] = ",".join(f"{c}-{quote}" for c in coins)
            first = subprocess.run([binary, "--clock-at", at(START), "run"], env=env, capture_output=True, text=True)
            if first.returncode != 0:
                sys.exit(f"the first run failed:\n{first.stdout}\n{first.stderr}")
            print("first run (8 hours of history):\n" + first.stdout, flush=True)
            per_step, totals = {}, []
            for i in range(1, args.runs + 1):
                r = subprocess.run([binary, "--clock-at", at(START + datetime.timedelta(hours=i)), "run"],
                                   env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"hourly run {i} failed:\n{r.stdout}\n{r.stderr}")
                run_id = r.stdout.split()[1]
                totals.append(stores.requests_of("requests:" + r.stdout.split("requests to the lake:", 1)[1]))
                rows = subprocess.run([binary, "sql", "--format", "json",
                                       f"SELECT step, details FROM crypto_ops.runs WHERE run_id = '{run_id}'"],
                                      env=env, check=True, capture_output=True, text=True).stdout
                for row in json.loads(rows):
                    d = json.loads(row["details"])
                    per_step.setdefault(row["step"], []).append(d.get("requests", {}))
                print(f"hourly run {i}: " + ", ".join(f"{totals[-1][k]} {k.upper()}" for k in stores.CLASSES), flush=True)
    finally:
        os.killpg(sim.pid, 15)
        sim.wait(10)
    lines = [f"one hourly run on S3 (SeaweedFS), medians of {args.runs} runs", "",
             "| step | GET | HEAD | PUT | LIST | DELETE |", "|---|---|---|---|---|---|"]
    for step, samples in sorted(per_step.items()):
        med = {k: statistics.median(s.get(k, 0) for s in samples) for k in stores.CLASSES}
        lines.append(f"| {step} | " + " | ".join(f"{med[k]:g}" for k in stores.CLASSES) + " |")
    med = {k: statistics.median(t[k] for t in totals) for k in stores.CLASSES}
    lines.append("| **the run** | " + " | ".join(f"**{med[k]:g}**" for k in stores.CLASSES) + " |")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
