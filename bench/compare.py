"""Compares an engine's silver and gold Parquet with cryptolake's: same rows, same keys, values
within float tolerance (booleans and timestamps exactly; a null only equals a null). Prints one
line per table; exits 1 on a difference.

usage: compare.py CRYPTOLAKE_LAKE OTHER_OUT
"""

import sys

import duckdb

lake, other = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
TABLES = {
    "silver/ohlcv_1h": (["exchange", "symbol", "open_time"],
                        ["open", "high", "low", "close", "volume", "quote_volume", "trade_count", "minutes_present", "minute_mask"]),
    "silver/ohlcv_1m": (["exchange", "symbol", "open_time"],
                        ["open", "high", "low", "close", "volume", "quote_volume", "trade_count",
                         "taker_buy_volume", "taker_buy_quote_volume", "fetched_at"]),
    "gold/ohlcv_1d": (["exchange", "symbol", "date"],
                      ["open", "high", "low", "close", "volume", "quote_volume", "trade_count", "hours_present", "is_complete"]),
}
# Compared exactly, not as numbers.
EXACT = {"is_complete", "fetched_at"}


def differs(v):
    if v in EXACT:
        return f"a.{v} IS DISTINCT FROM b.{v}"
    a, b = f"CAST(a.{v} AS DOUBLE)", f"CAST(b.{v} AS DOUBLE)"
    return f"(a.{v} IS DISTINCT FROM b.{v} AND (a.{v} IS NULL OR b.{v} IS NULL OR NOT (abs({a} - {b}) <= 1e-9 * greatest(abs({a}), 1))))"


failed = False
for table, (keys, values) in TABLES.items():
    def src(root):
        return f"read_parquet('{root}/{table}/*/*.parquet', hive_partitioning = true, union_by_name = true)"
    on = " AND ".join(f"a.{k} = b.{k}" for k in keys)
    diff = " OR ".join(differs(v) for v in values)
    n_a = con.execute(f"SELECT count(*) FROM {src(lake)}").fetchone()[0]
    n_b = con.execute(f"SELECT count(*) FROM {src(other)}").fetchone()[0]
    bad = con.execute(
        f"SELECT count(*) FROM {src(lake)} a FULL OUTER JOIN {src(other)} b ON {on} "
        f"WHERE a.{keys[0]} IS NULL OR b.{keys[0]} IS NULL OR {diff}"
    ).fetchone()[0]
    ok = n_a == n_b and bad == 0 and n_a > 0
    failed |= not ok
    print(f"{table}: cryptolake {n_a} rows, other {n_b} rows, {bad} differing: {'agree' if ok else 'DIFFER'}")
sys.exit(1 if failed else 0)
