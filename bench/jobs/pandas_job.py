"""The silver + gold job written the way the original AWS design does its batch steps, with
pandas and pyarrow: one batch per bronze date partition (as a scheduled job processes a
partition per invocation, so memory stays that of one day): read each bronze object, parse
its JSON, build a DataFrame, deduplicate, keep the minutes of the hours silver emits (the
day's ohlcv_1m), resample them to hours and the day, append the day's partitions to
partitioned Parquet (zstd).

usage: pandas_job.py BRONZE_DIR OUT_DIR
"""

import json
import os
import sys

import numpy as np
import pandas as pd

from days import bronze_days

bronze, out = sys.argv[1], sys.argv[2]


def one_day(paths):
    frames = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        nl = data.index(b"\n")
        env = json.loads(data[:nl])
        rows = json.loads(data[nl + 1 :])
        if not rows:
            continue
        df = pd.DataFrame(
            [r[:11] for r in rows],
            columns=["open_ms", "open", "high", "low", "close", "volume", "close_ms", "quote_volume", "trade_count",
                     "taker_buy_volume", "taker_buy_quote_volume"],
        )
        df["exchange"] = env["source"]
        df["symbol"] = env["symbol"]
        df["fetched_at"] = pd.Timestamp(env["fetched_at"])
        df["window_start"] = pd.Timestamp(env["window_start"])
        df["window_end"] = pd.Timestamp(env["window_end"])
        df["filename"] = path
        frames.append(df)
    if not frames:
        return
    m = pd.concat(frames, ignore_index=True)
    for c in ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
        m[c] = m[c].astype("float64")
    m["open_time"] = pd.to_datetime(m["open_ms"], unit="ms", utc=True)
    m["close_time"] = pd.to_datetime(m["close_ms"], unit="ms", utc=True)
    m = m[(m.open_time >= m.window_start) & (m.open_time < m.window_end) & (m.close_time <= m.fetched_at)]
    m["d"] = m.open_time.dt.date
    m["until"] = m.groupby(["exchange", "symbol", "d"])["window_end"].transform("max")
    m = m.sort_values(["fetched_at", "filename"]).drop_duplicates(["exchange", "symbol", "open_time"], keep="last")
    m["hour"] = m.open_time.dt.floor("h")
    # The minutes of the hours silver emits (a window covering the whole hour ended after it closed).
    m = m[m.hour + pd.Timedelta(hours=1) <= m.until]
    m = m.sort_values(["exchange", "symbol", "open_time"])
    # Per distinct value, not per row: the day's minutes are many, its dates few.
    m["date"] = m.d.map({d: d.isoformat() for d in m.d.unique()})
    minute_cols = ["exchange", "symbol", "open_time", "open", "high", "low", "close", "volume",
                   "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume", "fetched_at", "date"]
    m[minute_cols].to_parquet(f"{out}/silver/ohlcv_1m", partition_cols=["date"], compression="zstd", index=False)

    m["bit"] = np.left_shift(np.int64(1), m.open_time.dt.minute.to_numpy().astype(np.int64))
    g = m.groupby(["exchange", "symbol", "hour", "d"], sort=False)
    silver = g.agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), quote_volume=("quote_volume", "sum"), trade_count=("trade_count", "sum"),
        minutes_present=("open", "size"), minute_mask=("bit", "sum"), ingested_at=("fetched_at", "max"),
    ).reset_index()
    silver["base"] = silver.symbol.str.split("-").str[0]
    silver["quote"] = silver.symbol.str.split("-").str[1]
    silver["minutes_present"] = silver.minutes_present.astype("int32")
    silver = silver.rename(columns={"hour": "open_time"})
    silver["date"] = silver.open_time.dt.strftime("%Y-%m-%d")
    cols = ["exchange", "symbol", "base", "quote", "open_time", "open", "high", "low", "close", "volume",
            "quote_volume", "trade_count", "minutes_present", "minute_mask", "ingested_at", "date"]
    silver = silver[cols]
    silver.to_parquet(f"{out}/silver/ohlcv_1h", partition_cols=["date"], compression="zstd", index=False)

    s = silver.sort_values(["exchange", "symbol", "open_time"])
    gold = s.groupby(["exchange", "symbol", "date"], sort=False).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), quote_volume=("quote_volume", "sum"), trade_count=("trade_count", "sum"),
        hours_present=("open", "size"), min_minutes=("minutes_present", "min"),
    ).reset_index()
    gold["is_complete"] = (gold.hours_present == 24) & (gold.min_minutes == 60)
    gold["hours_present"] = gold.hours_present.astype("int32")
    gold = gold.drop(columns=["min_minutes"])
    gold.to_parquet(f"{out}/gold/ohlcv_1d", partition_cols=["date"], compression="zstd", index=False)


for _, paths in bronze_days(bronze):
    one_day(paths)

# Every file is written and closed by now. Leave without the interpreter's teardown: pyarrow's
# thread pools sometimes abort the process there ("terminate called without an active
# exception"), which would report a finished job as failed.
sys.stdout.flush()
os._exit(0)
