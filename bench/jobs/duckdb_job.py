"""The silver + gold job done as well as DuckDB can, one bronze date partition at a time (so
memory is that of one day, not of the input): read the day's bronze objects (envelope line,
then the Binance klines page), keep closed candles inside their request window, keep the
latest fetch of each minute, aggregate to hours, write the day's silver partition (zstd);
then gold from silver in one query.

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

SILVER = """
CREATE OR REPLACE TEMP TABLE minutes AS
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
)
SELECT exchange, symbol, window_end, fetched_at, filename,
       make_timestamptz(CAST(k[1] AS BIGINT) * 1000) AS open_time,
       make_timestamptz(CAST(k[7] AS BIGINT) * 1000) AS close_time,
       CAST(k[2] AS DOUBLE) AS open, CAST(k[3] AS DOUBLE) AS high, CAST(k[4] AS DOUBLE) AS low,
       CAST(k[5] AS DOUBLE) AS close, CAST(k[6] AS DOUBLE) AS volume,
       CAST(k[8] AS DOUBLE) AS quote_volume, CAST(k[9] AS BIGINT) AS trade_count
FROM rows
WHERE make_timestamptz(CAST(k[1] AS BIGINT) * 1000) >= window_start
  AND make_timestamptz(CAST(k[1] AS BIGINT) * 1000) < window_end
  AND make_timestamptz(CAST(k[7] AS BIGINT) * 1000) <= fetched_at
"""

COPY_SILVER = """
COPY (
  WITH latest AS (
    SELECT * FROM minutes
    QUALIFY row_number() OVER (PARTITION BY exchange, symbol, open_time ORDER BY fetched_at DESC, filename DESC) = 1
  ), asked AS (
    SELECT exchange, symbol, CAST(open_time AS DATE) AS d, max(window_end) AS until
    FROM minutes GROUP BY ALL
  )
  SELECT l.exchange, l.symbol,
         split_part(l.symbol, '-', 1) AS base, split_part(l.symbol, '-', 2) AS quote,
         date_trunc('hour', l.open_time) AS open_time,
         arg_min(l.open, l.open_time) AS open, max(l.high) AS high, min(l.low) AS low,
         arg_max(l.close, l.open_time) AS close, sum(l.volume) AS volume,
         sum(l.quote_volume) AS quote_volume, sum(l.trade_count) AS trade_count,
         CAST(count(*) AS INTEGER) AS minutes_present,
         bit_or(CAST(1 AS BIGINT) << minute(l.open_time)) AS minute_mask,
         max(l.fetched_at) AS ingested_at,
         CAST(date_trunc('hour', l.open_time) AS DATE) AS date
  FROM latest l JOIN asked a ON l.exchange = a.exchange AND l.symbol = a.symbol AND CAST(l.open_time AS DATE) = a.d
  GROUP BY l.exchange, l.symbol, date_trunc('hour', l.open_time), a.until
  HAVING date_trunc('hour', l.open_time) + INTERVAL 1 HOUR <= a.until
  ORDER BY l.exchange, l.symbol, open_time
) TO '{out}/silver/ohlcv_1h' (FORMAT PARQUET, PARTITION_BY (date), COMPRESSION ZSTD, APPEND)
"""

for _, files in bronze_days(bronze):
    con.execute(SILVER, {"files": files})
    con.execute(COPY_SILVER.format(out=out))

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
