"""Real PostgreSQL clients against `cryptolake serve --pg`, driven by crates/cli/tests/pg.rs.

Each subcommand connects with psycopg 3 or SQLAlchemy, does one thing and prints one JSON
document on stdout; the Rust test compares it with `cryptolake sql`'s answers. A failed
expectation exits non-zero with the reason on stderr.
"""

import datetime as dt
import json
import sys
import threading
import time

import psycopg


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def connect(dsn, **kw):
    return psycopg.connect(dsn, autocommit=True, **kw)


def parse_expected(value, kind):
    if value is None:
        return None
    if kind == "timestamptz":
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


def round_trip(dsn, expected_path):
    """The same rows over every path: simple protocol (text), extended protocol with a
    parameter in text and in binary, and a prepared statement; each value equal to
    `cryptolake sql`'s."""
    expected = json.load(open(expected_path))
    kinds = {
        "exchange": "text",
        "symbol": "text",
        "open_time": "timestamptz",
        "date": "date",
        "open": "float",
        "high": "float",
        "volume": "float",
        "trade_count": "int",
        "minutes_present": "int",
    }
    cols = list(kinds)
    symbol = expected[0]["symbol"]
    sql_params = (
        "SELECT " + ", ".join(cols) + " FROM crypto_analytics.ohlcv_1h"
        " WHERE symbol = %s AND open_time >= %s ORDER BY exchange, open_time LIMIT 100"
    )
    since = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    literal = sql_params.replace("%s", "'" + symbol + "'", 1).replace(
        "%s", "'2000-01-01T00:00:00Z'", 1
    )
    want = [tuple(parse_expected(r[c], kinds[c]) for c in cols) for r in expected]
    paths = {}
    with connect(dsn) as conn:
        with psycopg.ClientCursor(conn) as cur:  # simple query protocol, text results
            cur.execute(literal)
            paths["simple_text"] = (cur.fetchall(), [d.type_code for d in cur.description])
        with conn.cursor() as cur:  # extended protocol, text results
            cur.execute(sql_params, (symbol, since))
            paths["extended_text"] = (cur.fetchall(), [d.type_code for d in cur.description])
        with conn.cursor(binary=True) as cur:  # extended protocol, binary results
            cur.execute(sql_params, (symbol, since))
            paths["extended_binary"] = (cur.fetchall(), [d.type_code for d in cur.description])
        with conn.cursor(binary=True) as cur:  # a named prepared statement, run twice
            for _ in range(2):
                cur.execute(sql_params, (symbol, since), prepare=True)
            paths["prepared_binary"] = (cur.fetchall(), [d.type_code for d in cur.description])
    oids = None
    for name, (rows, types) in paths.items():
        if len(rows) != len(want):
            fail(f"{name}: {len(rows)} rows, expected {len(want)}")
        for i, (got, exp) in enumerate(zip(rows, want)):
            for c, g, e in zip(cols, got, exp):
                if g != e or type(g) is not type(e):
                    fail(f"{name}: row {i} {c}: got {g!r} ({type(g).__name__}), expected {e!r}")
        if oids is None:
            oids = types
        elif types != oids:
            fail(f"{name}: column types {types}, other paths {oids}")
    print(json.dumps({"rows": len(want), "paths": sorted(paths), "oids": dict(zip(cols, oids))}))


def polars_uri(uri, sql):
    """Polars' read_database_uri through connectorx, with the cursor protocol (docs/bi.md)."""
    import polars as pl

    df = pl.read_database_uri(sql, uri, protocol="cursor")
    print(json.dumps({"rows": df.height, "columns": df.columns, "dtypes": [str(t) for t in df.dtypes], "close_sum": df["close"].sum()}))


def refusals(dsn, statements_path):
    """Each statement on both protocols: the SQLSTATE and message the client gets."""
    statements = json.load(open(statements_path))
    out = []
    with connect(dsn) as conn:
        for sql in statements:
            for protocol in ("simple", "extended"):
                try:
                    if protocol == "simple":
                        with psycopg.ClientCursor(conn) as cur:
                            cur.execute(sql)
                    else:
                        conn.execute(sql, prepare=True)
                    out.append({"sql": sql, "protocol": protocol, "sqlstate": None})
                except psycopg.Error as e:
                    out.append(
                        {
                            "sql": sql,
                            "protocol": protocol,
                            "sqlstate": e.sqlstate,
                            "message": str(e).strip(),
                        }
                    )
        # The connection is still good after every refusal.
        out.append({"after": conn.execute("SELECT 1 + 1").fetchone()[0]})
    print(json.dumps(out))


def sessions(dsn):
    """Settings made by one client stay in its session."""
    a = connect(dsn)
    b = connect(dsn)
    a.execute("SET TIME ZONE 'America/New_York'")
    a.execute("SET application_name = 'client-a'")
    a.execute("SET extra_float_digits = 3")
    a.execute("SET statement_timeout = '4s'")
    show = lambda c, v: c.execute(f"SHOW {v}").fetchone()[0]
    res = {
        "a_timezone": show(a, "TIME ZONE"),
        "a_application_name": show(a, "application_name"),
        "a_statement_timeout": show(a, "statement_timeout"),
        "b_timezone": show(b, "TIME ZONE"),
        "b_application_name": show(b, "application_name"),
        "b_statement_timeout": show(b, "statement_timeout"),
        "a_param_timezone": a.info.parameter_status("TimeZone"),
        "b_param_timezone": b.info.parameter_status("TimeZone"),
    }
    a.execute("DISCARD ALL")
    res["a_after_discard_application_name"] = show(a, "application_name")
    res["a_after_discard_statement_timeout"] = show(a, "statement_timeout")
    # A transaction block, as tools open one around reads.
    with b.transaction():
        res["in_transaction"] = b.execute("SELECT count(*) FROM crypto_gold.ohlcv_1d").fetchone()[0]
    a.close()
    b.close()
    print(json.dumps(res))


def sqlalchemy_inspect(url):
    """What Superset asks of a database through SQLAlchemy's inspector."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    schemas = inspector.get_schema_names()
    tables = {s: sorted(inspector.get_table_names(schema=s)) for s in schemas if s.startswith("crypto")}
    columns = {
        f"{s}.{t}": [[c["name"], str(c["type"]), c["nullable"]] for c in inspector.get_columns(t, schema=s)]
        for s, ts in tables.items()
        for t in ts
    }
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM crypto_analytics.ohlcv_1h WHERE symbol = :s"), {"s": "S0001-USDT"}).scalar()
    print(
        json.dumps(
            {
                "server_version_info": list(engine.dialect.server_version_info),
                "schemas": schemas,
                "tables": tables,
                "columns": columns,
                "count_s0001": n,
            }
        )
    )


def run_all(dsn, statements_path):
    """Run each statement of a tool's sequence over the extended protocol, as its driver
    does, and report which ones failed."""
    statements = json.load(open(statements_path))
    out = []
    with connect(dsn) as conn:
        for sql in statements:
            try:
                cur = conn.execute(sql, prepare=True)
                rows = cur.fetchall() if cur.description else []
                out.append({"sql": sql, "rows": len(rows), "first": [str(v) for v in rows[0]] if rows else None})
            except psycopg.Error as e:
                out.append({"sql": sql, "error": f"{e.sqlstate}: {str(e).strip()}"})
    print(json.dumps(out))


def limits(dsn, hostile):
    """A hostile statement on one connection while another keeps querying."""
    result = {}

    def attack():
        t0 = time.monotonic()
        try:
            with connect(dsn) as conn:
                conn.execute(hostile).fetchall()
            result["hostile"] = "finished"
        except psycopg.Error as e:
            result["hostile"] = e.sqlstate
            result["hostile_message"] = str(e).strip()
        result["hostile_seconds"] = round(time.monotonic() - t0, 2)

    t = threading.Thread(target=attack)
    t.start()
    time.sleep(0.5)
    answered = []
    with connect(dsn) as conn:
        while t.is_alive():
            t0 = time.monotonic()
            conn.execute("SELECT count(*) FROM crypto_gold.ohlcv_1d").fetchone()
            answered.append(time.monotonic() - t0)
            time.sleep(0.1)
    t.join()
    result["others_answered"] = len(answered)
    result["others_slowest"] = round(max(answered), 2) if answered else None
    print(json.dumps(result))


def connections(dsn, n):
    """Opens connections one by one until one is refused, holding them all."""
    held = []
    refused = None
    for _ in range(n):
        try:
            held.append(connect(dsn, connect_timeout=10))
        except psycopg.OperationalError as e:
            refused = str(e).strip()
            break
    still = held[0].execute("SELECT 1").fetchone()[0] if held else None
    opened = len(held)
    for c in held:
        c.close()
    # Once closed, their slots are free again.
    time.sleep(0.5)
    with connect(dsn) as c:
        again = c.execute("SELECT 2").fetchone()[0]
    print(json.dumps({"opened": opened, "refused": refused, "still": still, "again": again}))


def tls(dsn):
    with connect(dsn) as conn:
        print(json.dumps({"ssl_in_use": conn.pgconn.ssl_in_use, "value": conn.execute("SELECT 40 + 2").fetchone()[0]}))


def signin(dsn):
    try:
        with connect(dsn) as conn:
            print(json.dumps({"ok": conn.execute("SELECT current_user").fetchone()[0] is not None}))
    except psycopg.OperationalError as e:
        print(json.dumps({"error": str(e).strip()}))


def cancel(dsn, statement):
    """Runs a long statement, cancels it from another thread after a second (psycopg's
    cancel(), a CancelRequest on a new connection) and reports what the statement got and
    when; then the same connection answers again."""
    with connect(dsn) as conn:
        pid = conn.info.backend_pid
        timer = threading.Timer(1.0, conn.cancel)
        started = time.monotonic()
        timer.start()
        try:
            conn.execute(statement).fetchall()
            code = None
        except psycopg.Error as e:
            code = e.sqlstate
        seconds = time.monotonic() - started
        timer.cancel()
        after = conn.execute("SELECT 40 + 2").fetchone()[0]
        print(json.dumps({"code": code, "seconds": seconds, "after": after, "pid": pid}))


def whoami(dsn):
    with connect(dsn) as conn:
        row = conn.execute("SELECT current_user AS a, session_user AS b").fetchone()
        print(json.dumps({"current_user": row[0], "session_user": row[1]}))


def params(dsn):
    """The server parameters the client was given at sign-in."""
    with connect(dsn) as conn:
        names = ["server_version", "is_superuser", "default_transaction_read_only", "search_path"]
        print(json.dumps({n: conn.info.parameter_status(n) for n in names}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "round_trip": round_trip,
        "polars_uri": polars_uri,
        "refusals": refusals,
        "sessions": sessions,
        "sqlalchemy": sqlalchemy_inspect,
        "run_all": run_all,
        "limits": limits,
        "connections": lambda dsn, n: connections(dsn, int(n)),
        "tls": tls,
        "signin": signin,
        "cancel": cancel,
        "whoami": whoami,
        "params": params,
    }[cmd](*args)
