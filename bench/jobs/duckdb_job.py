"""The silver + gold job done as well as DuckDB can, one bronze date partition at a time (so
memory is that of one day, not of the input): read the day's bronze objects (envelope line,
then the Binance klines page), keep closed candles inside their request window, keep the
latest fetch of each minute, keep the minutes of the hours silver emits, write the day's
ohlcv_1m partition from them and aggregate them to the day's ohlcv_1h partition (zstd); then
gold from silver in one query.

usage: duckdb_job.py BRONZE_DIR OUT_DIR [THREADS]
"""

import os
import sys

import duckdb

bronze, out = sys.argv[1], sys.argv[2]
os.makedirs(f"{out}/silver", exist_ok=True)
os.makedirs(f"{out}/gold", exist_ok=True)
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
if len(sys.argv) > 3:
    con.execute(f"SET threads = {int(sys.argv[3])}")
con.execute("SET preserve_insertion_order = false")

from days import bronze_days

# The day's kept minutes, once: the latest fetch of each minute (ties to the later bronze key),
# of the hours silver emits (some window covering the whole hour ended after it closed). Both
# silver tables are written from this one table.
SILVER = """
CREATE OR REPLACE TEMP TABLE kept AS
WITH files AS (
  SELECT filename, content, strpos(content, chr(10)) AS nl
  FROM read_text($files)
), pages AS (
  SELECT filename,
         json_extract_string(substr(content, 1, nl - 1), '$.source') AS exchange,
         json_extract_string(substr(content, 1, nl - 1), '$.symbol') AS symbol,
         CAST(json_extract_string(substr(content, 1, nl - 1), '$.fetched_at') AS TIMESTAMPTZ) AS fetched_at,
         CAST(json_extract_string(substr(content, 1, nl - 1), '$.window_start') AS TIMESTAMPTZ) AS window_start,
         CAST(json_extract_string(substr(content, 1, nl - 1), '$.window_end') AS TIMESTAMPTZ) AS window_end,
         from_json(substr(content, nl + 1), '[["VARCHAR"]]') AS rows
  FROM files
), rows AS (
  SELECT filename, exchange, symbol, fetched_at, window_start, window_end, unnest(rows) AS k
  FROM pages
), minutes AS MATERIALIZED (
  SELECT exchange, symbol, window_end, fetched_at, filename,
         make_timestamptz(CAST(k[1] AS BIGINT) * 1000) AS open_time,
         CAST(k[2] AS DOUBLE) AS open, CAST(k[3] AS DOUBLE) AS high, CAST(k[4] AS DOUBLE) AS low,
         CAST(k[5] AS DOUBLE) AS close, CAST(k[6] AS DOUBLE) AS volume,
         CAST(k[8] AS DOUBLE) AS quote_volume, CAST(k[9] AS BIGINT) AS trade_count,
         CAST(k[10] AS DOUBLE) AS taker_buy_volume, CAST(k[11] AS DOUBLE) AS taker_buy_quote_volume
  FROM rows
  WHERE make_timestamptz(CAST(k[1] AS BIGINT) * 1000) >= window_start
    AND make_timestamptz(CAST(k[1] AS BIGINT) * 1000) < window_end
    AND make_timestamptz(CAST(k[7] AS BIGINT) * 1000) <= fetched_at
), latest AS (
  SELECT * FROM minutes
  QUALIFY row_number() OVER (PARTITION BY exchange, symbol, open_time ORDER BY fetched_at DESC, filename DESC) = 1
), asked AS (
  SELECT exchange, symbol, CAST(open_time AS DATE) AS d, max(window_end) AS until
  FROM minutes GROUP BY ALL
)
SELECT l.exchange, l.symbol, l.open_time, l.open, l.high, l.low, l.close, l.volume, l.quote_volume, l.trade_count,
       l.taker_buy_volume, l.taker_buy_quote_volume, l.fetched_at
FROM latest l JOIN asked a ON l.exchange = a.exchange AND l.symbol = a.symbol AND CAST(l.open_time AS DATE) = a.d
WHERE date_trunc('hour', l.open_time) + INTERVAL 1 HOUR <= a.until
"""

COPY_SILVER_1M = """
COPY (
  SELECT exchange, symbol,
         open_time, open, high, low, close, volume, quote_volume, trade_count,
         taker_buy_volume, taker_buy_quote_volume, fetched_at,
         CAST(open_time AS DATE) AS date
  FROM kept
  ORDER BY exchange, symbol, open_time
) TO '{out}/silver/ohlcv_1m' (FORMAT PARQUET, PARTITION_BY (date), COMPRESSION ZSTD, APPEND)
"""

COPY_SILVER_1H = """
COPY (
  SELECT k.exchange, k.symbol,
         split_part(k.symbol, '-', 1) AS base, split_part(k.symbol, '-', 2) AS quote,
         date_trunc('hour', k.open_time) AS open_time,
         arg_min(k.open, k.open_time) AS open, max(k.high) AS high, min(k.low) AS low,
         arg_max(k.close, k.open_time) AS close, sum(k.volume) AS volume,
         sum(k.quote_volume) AS quote_volume, sum(k.trade_count) AS trade_count,
         CAST(count(*) AS INTEGER) AS minutes_present,
         bit_or(CAST(1 AS BIGINT) << minute(k.open_time)) AS minute_mask,
         max(k.fetched_at) AS ingested_at,
         CAST(date_trunc('hour', k.open_time) AS DATE) AS date
  FROM kept k
  GROUP BY k.exchange, k.symbol, date_trunc('hour', k.open_time)
  ORDER BY k.exchange, k.symbol, open_time
) TO '{out}/silver/ohlcv_1h' (FORMAT PARQUET, PARTITION_BY (date), COMPRESSION ZSTD, APPEND)
"""

for _, files in bronze_days(bronze):
    con.execute(SILVER, {"files": files})
    con.execute(COPY_SILVER_1M.format(out=out))
    con.execute(COPY_SILVER_1H.format(out=out))

con.execute(f"""
COPY (
  SELECT exchange, symbol,
         arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
         arg_max(close, open_time) AS close, sum(volume) AS volume, sum(quote_volume) AS quote_volume,
         sum(trade_count) AS trade_count, CAST(count(*) AS INTEGER) AS hours_present,
         count(*) = 24 AND min(minutes_present) = 60 AS is_complete, date
  FROM read_parquet('{out}/silver/ohlcv_1h/*/*.parquet', hive_partitioning = true, hive_types = {{'date': DATE}})
  GROUP BY exchange, symbol, date
  ORDER BY exchange, symbol
) TO '{out}/gold/ohlcv_1d' (FORMAT PARQUET, PARTITION_BY (date), COMPRESSION ZSTD, OVERWRITE_OR_IGNORE)
""")
