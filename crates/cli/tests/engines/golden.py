"""Reads a lake written by cryptolake with DuckDB and with Spark (local mode), through the DDL
`cryptolake catalog ddl` prints for each, runs the golden queries, and requires the same
answers as `cryptolake sql`. Exits non-zero naming the first difference.

usage: golden.py CRYPTOLAKE_BINARY LAKE_DIR
"""

import csv
import datetime
import io
import math
import subprocess
import sys

BINARY, LAKE = sys.argv[1], sys.argv[2]

# Each golden query in the dialect-neutral subset, or per engine where they differ (time
# formatting). Results are compared after normalising dates, numbers and NULLs.
QUERIES = {
    "daily_ohlcv_btc": {
        "all": "SELECT CAST(date AS VARCHAR) AS d, open, high, low, close, volume, hours_present, is_complete "
        "FROM crypto_gold.ohlcv_1d WHERE exchange = 'binance' AND symbol = 'BTC-USDT' ORDER BY d",
    },
    "top_volume_by_day": {
        "all": "SELECT CAST(g.date AS VARCHAR) AS d, g.exchange, g.symbol, g.quote_volume "
        "FROM crypto_gold.ohlcv_1d g JOIN (SELECT date, max(quote_volume) AS m FROM crypto_gold.ohlcv_1d "
        "WHERE quote_volume IS NOT NULL GROUP BY date) t ON g.date = t.date AND g.quote_volume = t.m "
        "ORDER BY d, g.exchange, g.symbol",
    },
    "hourly_completeness": {
        "all": "SELECT exchange, symbol, count(*) AS hours, sum(minutes_present) AS minutes, "
        "sum(CASE WHEN minutes_present = 60 THEN 1 ELSE 0 END) AS complete_hours, "
        "sum(CASE WHEN quote_volume IS NULL THEN 1 ELSE 0 END) AS no_quote_volume "
        "FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
    },
    "utc_hours": {
        "cryptolake": "SELECT exchange, symbol, to_char(min(open_time), '%Y-%m-%d %H:%M:%S') AS first, "
        "to_char(max(open_time), '%Y-%m-%d %H:%M:%S') AS last, CAST(min(date) AS VARCHAR) AS first_date "
        "FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
        "duckdb": "SELECT exchange, symbol, strftime(min(open_time) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') AS first, "
        "strftime(max(open_time) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') AS last, CAST(min(date) AS VARCHAR) AS first_date "
        "FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
        "spark": "SELECT exchange, symbol, date_format(min(open_time), 'yyyy-MM-dd HH:mm:ss') AS first, "
        "date_format(max(open_time), 'yyyy-MM-dd HH:mm:ss') AS last, CAST(min(date) AS STRING) AS first_date "
        "FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
    },
}


def query_for(name, engine):
    q = QUERIES[name]
    text = q.get(engine, q.get("all"))
    if engine == "spark":
        text = text.replace("AS VARCHAR", "AS STRING")
    return text


def norm(v):
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (datetime.date, datetime.datetime)):
        return str(v)
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v)
    if s in ("true", "false"):
        return s
    try:
        return float(s)
    except ValueError:
        return s


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def cryptolake(*args):
    out = subprocess.run([BINARY, "--lake", LAKE, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cryptolake {args[:2]} failed: {out.stderr}")
    return out.stdout


def cryptolake_rows(sql):
    text = cryptolake("sql", "--format", "csv", sql)
    return [[norm(v) for v in row] for row in list(csv.reader(io.StringIO(text)))[1:]]


def run_statements(execute, script):
    for stmt in script.split(";"):
        if stmt.strip():
            execute(stmt)


def duckdb_rows():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    run_statements(con.execute, cryptolake("catalog", "ddl", "--engine", "duckdb"))
    return {
        name: [[norm(v) for v in row] for row in con.execute(query_for(name, "duckdb")).fetchall()]
        for name in QUERIES
    }


def spark_rows():
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cryptolake-golden")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        run_statements(spark.sql, cryptolake("catalog", "ddl", "--engine", "spark"))
        return {
            name: [[norm(v) for v in row] for row in spark.sql(query_for(name, "spark")).collect()]
            for name in QUERIES
        }
    finally:
        spark.stop()


def main():
    expected = {name: cryptolake_rows(query_for(name, "cryptolake")) for name in QUERIES}
    for name, rows in expected.items():
        if not rows:
            sys.exit(f"{name}: cryptolake returned no rows; the lake is empty?")
    failures = 0
    for engine, rows_of in (("duckdb", duckdb_rows), ("spark", spark_rows)):
        got = rows_of()
        for name, want in expected.items():
            have = got[name]
            ok = len(have) == len(want) and all(
                len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)) for a, b in zip(have, want)
            )
            print(f"{engine:7} {name:22} {len(have):4} rows {'same' if ok else 'DIFFERENT'}")
            if not ok:
                failures += 1
                for a, b in zip(have, want):
                    if a != b:
                        print(f"  first difference: {engine} {a} != cryptolake {b}")
                        break
                else:
                    print(f"  {engine} has {len(have)} rows, cryptolake {len(want)}")
    sys.exit(1 if failures else 0)


main()
