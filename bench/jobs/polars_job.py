"""The silver + gold job done as well as Polars can, one bronze date partition at a time (so
memory is that of one day, not of the input): the day's klines pages become one CSV text (a
page id in front of each row) that Polars parses in one call; the envelopes become a small
page table; then filter, keep the latest fetch of each minute of the hours silver emits (those
minutes are the day's ohlcv_1m), aggregate them to hours and the day, write the day's
partitions (zstd).

usage: polars_job.py BRONZE_DIR OUT_DIR
"""

import json
import sys

import polars as pl

from days import bronze_days

bronze, out = sys.argv[1], sys.argv[2]


def one_day(paths):
    pages, chunks = [], []
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            data = f.read()
        nl = data.index(b"\n")
        env = json.loads(data[:nl])
        pages.append((i, env["source"], env["symbol"], env["fetched_at"], env["window_start"], env["window_end"], path))
        body = data[nl + 1 :].strip()
        if len(body) > 2:
            prefix = f"{i},".encode()
            chunks.append(prefix + body[2:-2].replace(b'"', b"").replace(b"],[", b"\n" + prefix) + b"\n")
    if not chunks:
        return

    page_df = pl.DataFrame(
        pages,
        schema=["page", "exchange", "symbol", "fetched_at", "window_start", "window_end", "filename"],
        orient="row",
    ).with_columns(
        [pl.col(c).str.to_datetime(time_zone="UTC", time_unit="us") for c in ("fetched_at", "window_start", "window_end")]
    )
    cols = ["page", "open_ms", "open", "high", "low", "close", "volume", "close_ms", "quote_volume", "trade_count",
            "taker_buy_volume", "taker_buy_quote_volume", "ig"]
    rows = pl.read_csv(
        b"".join(chunks),
        has_header=False,
        new_columns=cols,
        schema_overrides={
            "page": pl.Int64, "open_ms": pl.Int64, "close_ms": pl.Int64, "trade_count": pl.Int64,
            "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
            "volume": pl.Float64, "quote_volume": pl.Float64,
            "taker_buy_volume": pl.Float64, "taker_buy_quote_volume": pl.Float64,
        },
        columns=list(range(12)),
    )
    minutes = (
        rows.lazy()
        .join(page_df.lazy(), on="page")
        .with_columns(
            pl.from_epoch("open_ms", time_unit="ms").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("open_time"),
            pl.from_epoch("close_ms", time_unit="ms").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("close_time"),
        )
        .filter(
            (pl.col("open_time") >= pl.col("window_start"))
            & (pl.col("open_time") < pl.col("window_end"))
            & (pl.col("close_time") <= pl.col("fetched_at"))
        )
    )
    asked = minutes.group_by("exchange", "symbol", pl.col("open_time").dt.date().alias("d")).agg(pl.col("window_end").max().alias("until"))
    # The latest fetch of each minute (one sort: the last copy of a minute is its latest fetch,
    # and the kept rows are in silver's order), of the hours silver emits: the day's ohlcv_1m,
    # from which ohlcv_1h is aggregated.
    kept = (
        minutes.sort("exchange", "symbol", "open_time", "fetched_at", "filename")
        .unique(subset=["exchange", "symbol", "open_time"], keep="last", maintain_order=True)
        .with_columns(pl.col("open_time").dt.truncate("1h").alias("hour"), pl.col("open_time").dt.date().alias("d"))
        .join(asked, on=["exchange", "symbol", "d"], maintain_order="left")
        .filter(pl.col("hour") + pl.duration(hours=1) <= pl.col("until"))
        .collect()
    )
    kept.select(
        "exchange", "symbol",
        "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
        "taker_buy_volume", "taker_buy_quote_volume", "fetched_at",
        pl.col("d").alias("date"),
    ).write_parquet(f"{out}/silver/ohlcv_1m", compression="zstd", partition_by="date")
    silver = (
        kept.lazy()
        .group_by("exchange", "symbol", "hour", "d", maintain_order=True)
        .agg(
            pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
            pl.col("volume").sum(), pl.col("quote_volume").sum(), pl.col("trade_count").sum(),
            pl.len().cast(pl.Int32).alias("minutes_present"),
            pl.lit(2, dtype=pl.Int64).pow(pl.col("open_time").dt.minute().cast(pl.Int64)).sum().alias("minute_mask"),
            pl.col("fetched_at").max().alias("ingested_at"),
        )
        .select(
            "exchange", "symbol",
            pl.col("symbol").str.split("-").list.get(0).alias("base"),
            pl.col("symbol").str.split("-").list.get(1).alias("quote"),
            pl.col("hour").alias("open_time"),
            "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "minutes_present", "minute_mask", "ingested_at",
            pl.col("d").alias("date"),
        )
        .collect()
    )
    silver.write_parquet(f"{out}/silver/ohlcv_1h", compression="zstd", partition_by="date")
    gold = (
        silver.sort("exchange", "symbol", "open_time")
        .group_by("exchange", "symbol", "date", maintain_order=True)
        .agg(
            pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
            pl.col("volume").sum(), pl.col("quote_volume").sum(), pl.col("trade_count").sum(),
            pl.len().cast(pl.Int32).alias("hours_present"),
            ((pl.len() == 24) & (pl.col("minutes_present").min() == 60)).alias("is_complete"),
        )
    )
    gold.write_parquet(f"{out}/gold/ohlcv_1d", compression="zstd", partition_by="date")


for _, paths in bronze_days(bronze):
    one_day(paths)
