//! `cryptolake serve --pg` with real clients over a real socket: psql (Debian's
//! postgresql-client), psycopg 3 (simple and extended protocol, text and binary results), the
//! SQLAlchemy inspector as Superset uses it, pgJDBC (Debian's libpostgresql-jdbc-java, the driver
//! under DBeaver, Metabase and Tableau), and the exact SQL Grafana and Metabase send on connect
//! and for table discovery. Answers are compared with `cryptolake sql`'s.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::run::*;

/// A running `cryptolake serve --pg`, its PostgreSQL address; stopped with SIGTERM when dropped.
struct PgServed {
    child: Option<Child>,
    host: String,
    port: u16,
}

impl PgServed {
    fn start(dir: &Path, args: &[&str], envs: &[(String, String)]) -> PgServed {
        let lake = dir.join("lake").display().to_string();
        let mut all = vec![
            "--lake",
            lake.as_str(),
            "serve",
            "--no-schedule",
            "--http",
            "127.0.0.1:0",
        ];
        all.extend(args);
        let (child, rest) =
            spawn_announcing(dir, &all, envs, "serving the PostgreSQL protocol on ");
        let addr = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        PgServed {
            child: Some(child),
            host: host.to_string(),
            port: port.parse().unwrap(),
        }
    }

    fn dsn(&self, extra: &str) -> String {
        format!(
            "host={} port={} dbname=cryptolake user=tester {extra}",
            self.host, self.port
        )
    }
}

impl Drop for PgServed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn python() -> PathBuf {
    support::venv_with(
        &[
            "psycopg[binary]==3.3.9",
            "sqlalchemy==2.1.9",
            "connectorx==0.4.6",
            "polars==2.1.0",
        ],
        &|| support::venv_imports("psycopg, sqlalchemy, connectorx, polars"),
    )
}

/// Runs a subcommand of pg_clients.py; its JSON output.
fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg_clients.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pg_clients.py {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// psql on `served` with `args`, no password prompt, not yet run.
fn psql_command(served: &PgServed, args: &[&str]) -> Command {
    let mut cmd = support::tool("psql", "postgresql-client");
    cmd.args([
        "-X",
        "-w",
        "-h",
        &served.host,
        "-p",
        &served.port.to_string(),
    ])
    .args(["-U", "tester", "-d", "cryptolake"])
    .args(args)
    .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// psql with `args`, no password prompt: (exit code, stdout, stderr).
fn psql(served: &PgServed, args: &[&str]) -> (i32, String, String) {
    let out = psql_command(served, args)
        .output()
        .expect("psql runs (Debian's postgresql-client)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sql_json(dir: &Path, query: &str) -> Value {
    let lake = dir.join("lake").display().to_string();
    let out = ok(dir, &["--lake", &lake, "sql", "--format", "json", query]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{query}: {e}: {out}"))
}

/// A generated lake (3 symbols x 3 days) in a new directory, served with the PostgreSQL
/// protocol on a free loopback port under `envs`.
fn served(envs: &[(String, String)]) -> (tempfile::TempDir, PgServed) {
    let d = tempfile::tempdir().unwrap();
    generated_lake(d.path(), 3, 3, "2024-03-01");
    let served = PgServed::start(d.path(), &["--pg", "127.0.0.1:0"], envs);
    (d, served)
}

/// Every file of the lake with its size and modification time: what a refused write must not
/// change.
fn lake_files(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("lake")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().display().to_string(),
                    m.len(),
                    m.modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn pgjdbc_answers_every_metadata_call_and_a_prepared_statement_keeps_its_numbers() {
    let (d, served) = served(&[]);
    let dir = d.path();
    let url = format!(
        "jdbc:postgresql://{}:{}/cryptolake",
        served.host, served.port
    );
    let query = "SELECT count(*) AS n, round(sum(volume), 4) AS v FROM crypto_gold.ohlcv_1d WHERE symbol = 'S0001-USDT'";
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/JdbcProbe.java");
    assert!(
        Path::new("/usr/share/java/postgresql.jar").exists(),
        "pgJDBC is not installed: `bash .ci/test` installs it, or `sudo apt-get install libpostgresql-jdbc-java`"
    );
    let out = support::tool("java", "openjdk-17-jre-headless")
        .args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(&probe)
        .args([&url, query])
        .env("PGUSER", "tester")
        .output()
        .expect("java (.ci/run installs Java 17 and libpostgresql-jdbc-java)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |call: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{call} ")))
            .unwrap_or_else(|| panic!("{call} was not called: {text}"));
        let rest = line
            .strip_prefix(&format!("{call} ok "))
            .unwrap_or_else(|| panic!("{line}"));
        rest.trim().parse().unwrap()
    };
    // Every table SQL lists, silver's columns (the partition column `date` too), and no keys
    // or indexes: the lake has none.
    let tables = sql_json(
        dir,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema LIKE 'crypto%'",
    );
    assert_eq!(tables[0]["n"], json!(11));
    assert_eq!(json!(rows("getTables")), tables[0]["n"], "{text}");
    let silver_columns = sql_json(
        dir,
        "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'crypto_analytics' AND table_name = 'ohlcv_1h'",
    );
    assert_eq!(
        rows("getColumns") as f64,
        silver_columns[0]["n"].as_f64().unwrap(),
        "{text}"
    );
    for none in [
        "getPrimaryKeys",
        "getImportedKeys",
        "getExportedKeys",
        "getIndexInfo",
    ] {
        assert_eq!(rows(none), 0, "{none}: {text}");
    }
    assert!(rows("getTypeInfo") >= 10, "{text}");
    rows("getFunctions");
    rows("getTablePrivileges");
    // Seven runs of one prepared statement, text then binary results: the numbers of
    // `cryptolake sql`.
    let want = sql_json(dir, query);
    let (n, v) = (
        want[0]["n"].as_f64().unwrap(),
        want[0]["v"].as_f64().unwrap(),
    );
    let runs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("prepared "))
        .collect();
    assert_eq!(runs.len(), 7, "{text}");
    for line in runs {
        let row = line.splitn(3, ' ').nth(2).unwrap().trim_end_matches(';');
        let (got_n, got_v) = row.split_once('|').unwrap_or_else(|| panic!("{line}"));
        assert_eq!(got_n.parse::<f64>().unwrap(), n, "{line}");
        assert!(
            (got_v.parse::<f64>().unwrap() - v).abs() < 1e-6 * v.abs(),
            "{line}"
        );
    }
}

#[test]
fn psql_reads_exact_results_and_lists_the_tables() {
    let (d, served) = served(&[]);
    let dir = d.path();

    // Exact results: the same figures as `cryptolake sql`, as psql prints them unaligned.
    let query = "SELECT symbol, count(*) AS n, sum(trade_count) AS trades, min(open_time) AS first FROM crypto_analytics.ohlcv_1h GROUP BY symbol ORDER BY symbol";
    let (code, out, err) = psql(&served, &["-A", "-t", "-F", ",", "-c", query]);
    assert_eq!(code, 0, "{err}");
    let want = sql_json(dir, query);
    let want: Vec<String> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{}",
                r["symbol"].as_str().unwrap(),
                r["n"],
                r["trades"],
                r["first"]
                    .as_str()
                    .unwrap()
                    .replace('T', " ")
                    .replace('Z', "+00")
            )
        })
        .collect();
    // Timestamps as PostgreSQL writes timestamptz text (`…00:00:00+00`; the server writes the
    // microseconds out, `…00:00:00.000000+00`, which every client parses to the same instant).
    let got: Vec<String> = out
        .lines()
        .map(|l| l.replace(".000000+00", "+00"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 3);

    // version(): PostgreSQL and a version number first, as SQLAlchemy and Superset require.
    let (_, version, _) = psql(&served, &["-A", "-t", "-c", "SELECT version()"]);
    assert!(version.starts_with("PostgreSQL 16.6 "), "{version}");

    // Listing: schemas, the tables of each, and a table's columns, as psql's \dn, \dt, \d.
    let (code, schemas, err) = psql(&served, &["-c", "\\dn"]);
    assert_eq!(code, 0, "{err}");
    for s in ["crypto_analytics", "crypto_gold", "crypto_ops"] {
        assert!(schemas.contains(s), "{s} missing from \\dn: {schemas}");
    }
    let (code, tables, err) = psql(&served, &["-c", "\\dt crypto_*.*"]);
    assert_eq!(code, 0, "{err}");
    for t in ["ohlcv_1h", "ohlcv_1d", "runs", "gaps", "quality_results"] {
        assert!(tables.contains(t), "{t} missing from \\dt: {tables}");
    }
    let (code, columns, err) = psql(&served, &["-c", "\\d crypto_analytics.ohlcv_1h"]);
    assert_eq!(code, 0, "{err}");
    for (c, ty) in [
        ("open_time", "timestamp"),
        ("volume", "double precision"),
        ("trade_count", "bigint"),
        ("date", "date"),
        ("symbol", "text"),
    ] {
        assert!(
            columns
                .lines()
                .any(|l| l.trim_start().starts_with(c) && l.contains(ty)),
            "{c} {ty} missing from \\d: {columns}"
        );
    }

    // A write is refused, with PostgreSQL's code for it, and psql exits 1.
    let (code, _, err) = psql(
        &served,
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "\\set VERBOSITY verbose",
            "-c",
            "INSERT INTO crypto_analytics.ohlcv_1h SELECT * FROM crypto_analytics.ohlcv_1h",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("25006"), "{err}");
    assert!(err.contains("cannot execute INSERT"), "{err}");
}

#[test]
fn psycopg_round_trips_every_type_in_text_and_binary() {
    let (d, served) = served(&[]);
    let dir = d.path();
    // The JSON text itself goes to the client, parsed there with Python's exact float parser.
    let lake = dir.join("lake").display().to_string();
    let text = ok(
        dir,
        &[
            "--lake",
            &lake,
            "sql",
            "--format",
            "json",
            "SELECT exchange, symbol, open_time, date, open, high, volume, trade_count, minutes_present FROM crypto_analytics.ohlcv_1h WHERE symbol = 'S0002-USDT' ORDER BY exchange, open_time LIMIT 100",
        ],
    );
    let expected: Value = serde_json::from_str(text.trim()).unwrap();
    let path = dir.join("expected.json");
    std::fs::write(&path, text.trim()).unwrap();
    let got = client(&["round_trip", &served.dsn(""), path.to_str().unwrap()]);
    assert_eq!(
        got["rows"].as_u64().unwrap() as usize,
        expected.as_array().unwrap().len()
    );
    assert!(got["rows"].as_u64().unwrap() >= 24);
    assert_eq!(
        got["paths"],
        json!([
            "extended_binary",
            "extended_text",
            "prepared_binary",
            "simple_text"
        ])
    );
    // Polars through connectorx, as docs/bi.md shows: the same rows and closes as SQL.
    let uri = format!(
        "postgresql://tester@{}:{}/cryptolake",
        served.host, served.port
    );
    let query = "SELECT symbol, open_time, close FROM crypto_analytics.ohlcv_1h WHERE symbol = 'S0002-USDT'";
    let frame = client(&["polars_uri", &uri, query]);
    let want = sql_json(
        dir,
        "SELECT count(*) AS n, sum(close) AS s FROM crypto_analytics.ohlcv_1h WHERE symbol = 'S0002-USDT'",
    );
    assert_eq!(frame["rows"], want[0]["n"]);
    assert_eq!(
        frame["dtypes"],
        json!([
            "String",
            "Datetime(time_unit='us', time_zone='UTC')",
            "Float64"
        ])
    );
    let (a, b) = (
        frame["close_sum"].as_f64().unwrap(),
        want[0]["s"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-9 * b, "{a} {b}");

    // PostgreSQL's type OIDs: text, timestamptz, date, float8, int8, int4.
    let oids = &got["oids"];
    for (col, oid) in [
        ("symbol", 25),
        ("open_time", 1184),
        ("date", 1082),
        ("volume", 701),
        ("trade_count", 20),
        ("minutes_present", 23),
    ] {
        assert_eq!(oids[col], json!(oid), "{col}: {oids}");
    }
}

#[test]
fn sqlalchemy_inspector_sees_what_sql_sees() {
    let (d, served) = served(&[]);
    let dir = d.path();
    let url = format!(
        "postgresql+psycopg://tester@{}:{}/cryptolake",
        served.host, served.port
    );
    let got = client(&["sqlalchemy", &url]);
    assert_eq!(got["server_version_info"], json!([16, 6]));
    let schemas: Vec<&str> = got["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in ["crypto_analytics", "crypto_gold", "crypto_ops"] {
        assert!(schemas.contains(&s), "{schemas:?}");
    }
    assert_eq!(
        got["tables"]["crypto_analytics"],
        json!(["funding_rates", "mark_ohlcv_1m", "ohlcv_1h", "ohlcv_1m"])
    );
    assert_eq!(
        got["tables"]["crypto_gold"],
        json!(["funding_1d", "ohlcv_1d"])
    );
    // Every column SQL's information_schema lists (the catalogs order them differently).
    let want = sql_json(
        dir,
        "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_schema LIKE 'crypto_%'",
    );
    for (table, cols) in got["columns"].as_object().unwrap() {
        let (schema, name) = table.split_once('.').unwrap();
        let want: Vec<&str> = want
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["table_schema"] == schema && r["table_name"] == name)
            .map(|r| r["column_name"].as_str().unwrap())
            .collect();
        let mut want = want;
        let mut got: Vec<&str> = cols
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap())
            .collect();
        want.sort();
        got.sort();
        assert!(!got.is_empty());
        assert_eq!(got, want, "{table}");
    }
    let types: Vec<String> = got["columns"]["crypto_analytics.ohlcv_1h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c[0].as_str().unwrap(), c[1].as_str().unwrap()))
        .collect();
    for t in [
        "open_time:TIMESTAMP",
        "volume:DOUBLE PRECISION",
        "trade_count:BIGINT",
        "date:DATE",
    ] {
        assert!(
            types.iter().any(|x| x.starts_with(t)),
            "{t} not in {types:?}"
        );
    }
    let n = sql_json(
        dir,
        "SELECT count(*) AS n FROM crypto_analytics.ohlcv_1h WHERE symbol = 'S0001-USDT'",
    );
    assert_eq!(got["count_s0001"], n[0]["n"]);
}

/// Grafana's PostgreSQL data source: table and column discovery (from its query editor's
/// sources), then a time series with `$__timeFilter` and `$__timeGroupAlias` expanded as
/// Grafana expands them.
const GRAFANA: &[&str] = &[
    r#"SELECT
        CASE WHEN
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              )
          THEN quote_ident(table_name)
          ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
        END AS "table"
        FROM information_schema.tables
        WHERE quote_ident(table_schema) NOT IN ('information_schema',
                                 'pg_catalog',
                                 '_timescaledb_cache',
                                 '_timescaledb_catalog',
                                 '_timescaledb_internal',
                                 '_timescaledb_config',
                                 'timescaledb_information',
                                 'timescaledb_experimental')
        ORDER BY CASE WHEN
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              ) THEN 0 ELSE 1 END, 1"#,
    r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
        FROM information_schema.columns
        WHERE
          CASE WHEN array_length(parse_ident('crypto_analytics.ohlcv_1h'),1) = 2
            THEN quote_ident(table_schema) = (parse_ident('crypto_analytics.ohlcv_1h'))[1]
              AND quote_ident(table_name) = (parse_ident('crypto_analytics.ohlcv_1h'))[2]
            ELSE quote_ident(table_name) = 'crypto_analytics.ohlcv_1h'
              AND
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              )
          END"#,
    // $__timeGroupAlias(open_time, '6h') and $__timeFilter(open_time) for 2024-03-01..03-03,
    // as Grafana's PostgreSQL macro engine writes them.
    r#"SELECT floor(extract(epoch from open_time)/21600)*21600 AS "time", symbol AS metric, sum(volume) AS volume
        FROM crypto_analytics.ohlcv_1h
        WHERE open_time BETWEEN '2024-03-01T00:00:00Z' AND '2024-03-03T00:00:00Z'
        GROUP BY 1, 2 ORDER BY 1, 2"#,
    // $__timeGroup(date, '1d') over gold, and $__timeFilter on a timestamp cast.
    r#"SELECT floor(extract(epoch from CAST(date AS timestamp))/86400)*86400 AS "time", avg(close) AS close
        FROM crypto_gold.ohlcv_1d
        WHERE CAST(date AS timestamp) BETWEEN '2024-03-01T00:00:00Z' AND '2024-03-04T00:00:00Z'
        GROUP BY 1 ORDER BY 1"#,
];

/// Metabase's connection sequence through the PostgreSQL JDBC driver, and its table
/// discovery (from its driver's sources).
const METABASE: &[&str] = &[
    "SET extra_float_digits = 2",
    "SET application_name = 'Metabase v0.55.1 [f8f63fdf-d8f8-4573-86ea-4fe4a9548041]'",
    "SHOW TRANSACTION ISOLATION LEVEL",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    r#"SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG" FROM pg_catalog.pg_namespace  WHERE nspname <> 'pg_toast' AND (nspname !~ '^pg_temp_'  OR nspname = (pg_catalog.current_schemas(true))[1]) AND (nspname !~ '^pg_toast_temp_'  OR nspname = replace((pg_catalog.current_schemas(true))[1], 'pg_temp_', 'pg_toast_temp_'))  ORDER BY "TABLE_SCHEM""#,
    r#"with table_privileges as (
         select
           NULL as role,
           t.schemaname as schema,
           t.objectname as table,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'update') as update,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'select') as select,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'insert') as insert,
           pg_catalog.has_table_privilege(     current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'delete') as delete
         from (
           select schemaname, tablename as objectname from pg_catalog.pg_tables
           union
           select schemaname, viewname as objectname from pg_catalog.pg_views
           union
           select schemaname, matviewname as objectname from pg_catalog.pg_matviews
         ) t
         where t.schemaname !~ '^pg_'
           and t.schemaname <> 'information_schema'
           and pg_catalog.has_schema_privilege(current_user, t.schemaname, 'usage')
        )
        select t.*
        from table_privileges t"#,
    r#"SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS "type", "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = '0') AND ("d"."classoid" = 'pg_class'::regclass) LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname") WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ '^pg_') AND ("n"."nspname" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND ("n"."nspname" IN ('crypto_analytics', 'crypto_gold')) ORDER BY "type" ASC, "schema" ASC, "name" ASC"#,
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "show timezone",
];

/// Grafana's PostgreSQL macros and this dashboard's variables, expanded as Grafana does for
/// the range 2024-03-01T00:00:00Z to 2024-03-03T00:00:00Z (runs: any time this decade).
fn grafana_expand(q: &str) -> String {
    let mut q = q
        .replace("$exchange", "binance")
        .replace("$symbol", "S0001-USDT");
    while let Some(start) = q.find("$__") {
        let open = start + q[start..].find('(').unwrap();
        let mut depth = 0;
        let mut close = open;
        for (i, c) in q[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let name = &q[start + 3..open];
        let args = &q[open + 1..close];
        let (column, interval) = match args.rsplit_once(", '") {
            Some((c, i)) if name != "timeFilter" => (c.to_string(), Some(i.trim_end_matches('\''))),
            _ => (args.to_string(), None),
        };
        let seconds = |i: &str| match i.strip_suffix('h') {
            Some(h) => h.parse::<u64>().unwrap() * 3600,
            None => i.trim_end_matches('d').parse::<u64>().unwrap() * 86400,
        };
        let (from, to) = if column.contains("started_at") {
            ("2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z")
        } else {
            ("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z")
        };
        let text = match name {
            "timeFilter" => format!("{column} BETWEEN '{from}' AND '{to}'"),
            "timeGroup" => {
                let s = seconds(interval.unwrap());
                format!("floor(extract(epoch from {column})/{s})*{s}")
            }
            "timeGroupAlias" => {
                let s = seconds(interval.unwrap());
                format!("floor(extract(epoch from {column})/{s})*{s} AS \"time\"")
            }
            other => panic!("macro $__{other} is not expanded here"),
        };
        q.replace_range(start..=close, &text);
    }
    q
}

fn run_sequence(served: &PgServed, dir: &Path, name: &str, statements: &[&str]) -> Vec<Value> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(statements).unwrap()).unwrap();
    let got = client(&["run_all", &served.dsn(""), path.to_str().unwrap()]);
    let got = got.as_array().unwrap().clone();
    for r in &got {
        assert!(r.get("error").is_none(), "{name}: {r}");
    }
    got
}

#[test]
fn grafana_and_metabase_connect_and_discover_tables() {
    let (d, served) = served(&[]);
    let dir = d.path();

    let grafana = run_sequence(&served, dir, "grafana", GRAFANA);
    // The table list Grafana shows; the columns of the one it picked.
    assert!(grafana[0]["rows"].as_u64().unwrap() >= 5, "{}", grafana[0]);
    assert_eq!(grafana[1]["rows"].as_u64().unwrap(), 17, "{}", grafana[1]);
    // The 6-hour buckets: three symbols over two days and the first hour of the third
    // (BETWEEN includes 2024-03-03 00:00).
    assert_eq!(grafana[2]["rows"].as_u64().unwrap(), 3 * (8 + 1));
    let first = &grafana[2]["first"];
    assert_eq!(
        first[0].as_str().unwrap().parse::<f64>().unwrap(),
        1_709_251_200.0
    );
    let want = sql_json(
        dir,
        "SELECT sum(volume) AS v FROM crypto_analytics.ohlcv_1h WHERE symbol = 'S0001-USDT' AND open_time >= '2024-03-01T00:00:00Z' AND open_time < '2024-03-01T06:00:00Z'",
    );
    let got: f64 = first[2].as_str().unwrap().parse().unwrap();
    let want = want[0]["v"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    assert_eq!(grafana[3]["rows"].as_u64().unwrap(), 3);

    // The shipped dashboard: every query (variables and panels), with the variables and
    // macros expanded as Grafana expands them, runs and returns rows.
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/cryptolake.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries: Vec<String> = board["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["query"].as_str().unwrap().to_string())
        .collect();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(
                target["datasource"]["uid"],
                json!("${DS_CRYPTOLAKE}"),
                "{panel}"
            );
            queries.push(target["rawSql"].as_str().unwrap().to_string());
        }
    }
    let expanded: Vec<String> = queries.iter().map(|q| grafana_expand(q)).collect();
    let refs: Vec<&str> = expanded.iter().map(String::as_str).collect();
    let results = run_sequence(&served, dir, "dashboard", &refs);
    for (q, r) in expanded.iter().zip(&results) {
        assert!(r["rows"].as_u64().unwrap() > 0, "no rows: {q}");
    }
    assert_eq!(results[0]["first"], json!(["binance"]));
    // The candles panel: 48 hours of one symbol, as SQL has them.
    assert_eq!(results[2]["rows"].as_u64().unwrap(), 49);

    let metabase = run_sequence(&served, dir, "metabase", METABASE);
    // Schemas, then tables of the two analytics schemas.
    let schemas = metabase[4]["rows"].as_u64().unwrap();
    assert!(schemas >= 3, "{}", metabase[4]);
    assert_eq!(metabase[6]["rows"].as_u64().unwrap(), 6, "{}", metabase[6]);
}

#[test]
fn writes_and_engine_settings_are_refused_on_both_protocols() {
    let (d, served) = served(&[]);
    let dir = d.path();
    let before = lake_files(dir);
    let statements = [
        (
            "INSERT INTO crypto_analytics.ohlcv_1h SELECT * FROM crypto_analytics.ohlcv_1h",
            "25006",
        ),
        ("UPDATE crypto_gold.ohlcv_1d SET close = 0", "25006"),
        ("DELETE FROM crypto_gold.ohlcv_1d", "25006"),
        ("CREATE TABLE x AS SELECT 1", "25006"),
        ("CREATE VIEW v AS SELECT 1", "25006"),
        ("DROP TABLE crypto_gold.ohlcv_1d", "25006"),
        ("ALTER TABLE crypto_gold.ohlcv_1d RENAME TO y", "25006"),
        ("TRUNCATE crypto_gold.ohlcv_1d", "25006"),
        ("COPY crypto_gold.ohlcv_1d TO 'OUT_FILE'", "25006"),
        ("COPY (SELECT 1) TO STDOUT", "25006"),
        ("CREATE SCHEMA s", "25006"),
        ("SET datafusion.execution.batch_size = 1", "42501"),
        (
            "SET datafusion.catalog.information_schema TO false",
            "42501",
        ),
        (
            "SET SESSION \"datafusion\".\"execution\".batch_size = 1",
            "42501",
        ),
        ("SELECT * FROM read_parquet('/etc/hostname')", "42883"),
        (
            "EXPLAIN INSERT INTO crypto_gold.ohlcv_1d SELECT * FROM crypto_gold.ohlcv_1d",
            "25006",
        ),
    ];
    let path = dir.join("refused.json");
    // COPY's target is a file of the test's own directory, which must not appear.
    let out_file = dir.join("out.csv");
    let out_path = out_file.display().to_string();
    let sqls: Vec<String> = statements
        .iter()
        .map(|(s, _)| s.replace("OUT_FILE", &out_path))
        .collect();
    std::fs::write(&path, serde_json::to_string(&sqls).unwrap()).unwrap();
    let got = client(&["refusals", &served.dsn(""), path.to_str().unwrap()]);
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), statements.len() * 2 + 1);
    for (i, (sql, code)) in statements.iter().enumerate() {
        for j in 0..2 {
            let r = &got[i * 2 + j];
            assert_eq!(r["sql"], json!(sql.replace("OUT_FILE", &out_path)));
            assert_eq!(r["sqlstate"], json!(code), "{r}");
        }
    }
    assert_eq!(got.last().unwrap()["after"], json!(2));
    // A correlated subquery over the lake inside a CASE gets what `cryptolake sql` gives (an
    // error, or the same values), never NULLs in its place: only catalog subqueries there are
    // answered NULL, as the catalog has no defaults, sequences or collations.
    let query = "SELECT d.symbol, d.date, CASE WHEN d.close > 0 THEN (SELECT max(h.high) FROM crypto_analytics.ohlcv_1h h WHERE h.symbol = d.symbol) END AS top FROM crypto_gold.ohlcv_1d d ORDER BY 1, 2";
    let lake = dir.join("lake").display().to_string();
    let direct = cryptolake_with(
        dir,
        &["--lake", &lake, "sql", "--format", "csv", query],
        &[],
    );
    let (code, out, err) = psql(&served, &["-A", "-F", ",", "-P", "footer=off", "-c", query]);
    if direct.code == 0 {
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), direct.stdout.trim().replace('"', ""), "{err}");
    } else {
        assert_eq!(code, 1, "{out}");
        assert!(err.contains("ERROR"), "{err}");
    }
    // CREATE EXTERNAL TABLE, DataFusion's own file-reading statement, is refused too.
    let (code, _, err) = psql(
        &served,
        &[
            "-c",
            "\\set VERBOSITY verbose",
            "-c",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("25006"), "{err}");
    assert_eq!(
        lake_files(dir),
        before,
        "a refused statement changed the lake"
    );
    assert!(!out_file.exists());
}

#[test]
fn session_settings_belong_to_one_client() {
    let (_d, served) = served(&[]);
    let got = client(&["sessions", &served.dsn("")]);
    assert_eq!(got["a_timezone"], json!("America/New_York"), "{got}");
    assert_eq!(got["a_param_timezone"], json!("America/New_York"), "{got}");
    assert_eq!(got["a_application_name"], json!("client-a"), "{got}");
    assert_eq!(got["a_statement_timeout"], json!("4000ms"), "{got}");
    assert_ne!(got["b_timezone"], got["a_timezone"], "{got}");
    assert_ne!(got["b_param_timezone"], got["a_param_timezone"], "{got}");
    assert_ne!(got["b_application_name"], json!("client-a"), "{got}");
    assert_eq!(got["b_statement_timeout"], json!("0"), "{got}");
    assert_eq!(
        got["a_after_discard_statement_timeout"],
        json!("0"),
        "{got}"
    );
    assert_eq!(got["in_transaction"], json!(9), "{got}");
}

#[test]
fn a_hostile_query_fails_alone_and_connections_are_limited() {
    let envs = [
        ("CRYPTOLAKE_QUERY_TIMEOUT".to_string(), "3s".to_string()),
        (
            "CRYPTOLAKE_SERVER_PG_MAX_CONNECTIONS".to_string(),
            "3".to_string(),
        ),
    ];
    let (_d, served) = served(&envs);
    let got = client(&[
        "limits",
        &served.dsn(""),
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ]);
    assert_eq!(got["hostile"], json!("57014"), "{got}");
    assert!(got["hostile_seconds"].as_f64().unwrap() < 30.0, "{got}");
    assert!(got["others_answered"].as_u64().unwrap() >= 3, "{got}");
    assert!(got["others_slowest"].as_f64().unwrap() < 3.0, "{got}");

    let got = client(&["connections", &served.dsn(""), "5"]);
    assert_eq!(got["opened"], json!(3), "{got}");
    let refused = got["refused"].as_str().unwrap();
    assert!(refused.contains("too many clients"), "{refused}");
    assert_eq!(got["still"], json!(1));
    assert_eq!(got["again"], json!(2));
}

#[test]
fn users_sign_in_with_scram_and_tls_is_used_or_the_server_stops() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    generated_lake(dir, 3, 3, "2024-03-01");

    // A hash from `cryptolake pg-password`, in the file; a second user from the environment.
    let mut cmd = command(dir, &["pg-password"], &[]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("cryptolake-scram-sha-256$4096:"), "{hash}");
    assert!(!hash.contains("correct horse"));

    // TLS: a self-signed certificate made here.
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let status = support::tool("openssl", "openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let config = dir.join("cryptolake.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npg_tls_cert = {:?}\npg_tls_key = {:?}\n\n[[server.pg_users]]\nname = \"grafana\"\npassword_hash = \"{hash}\"\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let envs = [
        (
            "CRYPTOLAKE_SERVER_PG_USER".to_string(),
            "metabase".to_string(),
        ),
        (
            "CRYPTOLAKE_SERVER_PG_PASSWORD".to_string(),
            "another secret".to_string(),
        ),
    ];
    let config_arg = config.display().to_string();
    let served = PgServed::start(
        dir,
        &["--pg", "127.0.0.1:0"],
        &[
            envs.to_vec(),
            vec![("CRYPTOLAKE_CONFIG".to_string(), config_arg.clone())],
        ]
        .concat(),
    );
    let dsn = |user: &str, pw: &str, ssl: &str| {
        format!(
            "host={} port={} dbname=cryptolake user={user} password='{pw}' sslmode={ssl}",
            served.host, served.port
        )
    };
    let got = client(&["tls", &dsn("grafana", "correct horse battery", "require")]);
    assert_eq!(got, json!({"ssl_in_use": true, "value": 42}));
    let got = client(&["tls", &dsn("metabase", "another secret", "require")]);
    assert_eq!(got["ssl_in_use"], json!(true));
    // SCRAM-SHA-256-PLUS: the sign-in bound to this TLS channel (libpq refuses to go on
    // without it when asked to require it).
    let bound = format!(
        "{} channel_binding=require",
        dsn("grafana", "correct horse battery", "require")
    );
    let got = client(&["tls", &bound]);
    assert_eq!(got, json!({"ssl_in_use": true, "value": 42}));
    // With TLS configured, plain text is refused, even with the right password.
    let got = client(&[
        "signin",
        &dsn("grafana", "correct horse battery", "disable"),
    ]);
    let err = got["error"]
        .as_str()
        .unwrap_or_else(|| panic!("signed in over plain text: {got}"));
    assert!(err.contains("TLS only"), "{err}");
    for (user, pw) in [
        ("grafana", "wrong"),
        ("metabase", "correct horse battery"),
        ("nobody", "another secret"),
    ] {
        let got = client(&["signin", &dsn(user, pw, "require")]);
        let err = got["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{user} signed in with {pw}: {got}"));
        assert!(
            err.to_ascii_lowercase().contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{err}"
        );
    }
    drop(served);

    // Unusable TLS files stop the server with a message naming the file; no plain text.
    std::fs::write(&key, "not a key").unwrap();
    let lake = dir.join("lake").display().to_string();
    let run = cryptolake_with(
        dir,
        &[
            "--config",
            &config_arg,
            "--lake",
            &lake,
            "serve",
            "--no-schedule",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let errors = error_lines(&run.stderr);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("server.key"), "{}", errors[0]);
    assert!(errors[0].contains("TLS"), "{}", errors[0]);

    // Any address but loopback without a user: refused before listening.
    std::fs::remove_file(&config).unwrap();
    let run = cryptolake_with(
        dir,
        &[
            "--lake",
            &lake,
            "serve",
            "--no-schedule",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("without a user"), "{}", run.stderr);

    // A plain password in the file is refused, naming the key.
    std::fs::write(
        &config,
        "[[server.pg_users]]\nname = \"x\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let run = cryptolake_with(
        dir,
        &[
            "--config",
            &config_arg,
            "--lake",
            &lake,
            "serve",
            "--pg",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("password"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

/// A raw wire-protocol client, for what no driver sends.
struct Raw(std::net::TcpStream);

impl Raw {
    fn connect(served: &PgServed) -> Raw {
        let s = std::net::TcpStream::connect((served.host.as_str(), served.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        // The server may already have closed: what it read is what the test checks.
        let _ = self.0.write_all(bytes);
    }

    /// A typed message: type byte, length, body.
    fn message(&mut self, kind: u8, body: &[u8]) {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        self.send(&m);
    }

    fn startup(&mut self, user: &str) {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for part in ["user", user, "database", "cryptolake"] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        self.send(&m);
    }

    /// The next message (type, body), or `None` when the server closed the connection.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.0.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages until one of type `kind` (returned), or the end.
    fn until(&mut self, kind: u8) -> Option<Vec<u8>> {
        while let Some((k, body)) = self.read() {
            if k == kind {
                return Some(body);
            }
        }
        None
    }

    /// Whether the server closes the connection without another message.
    fn closed(&mut self) -> bool {
        self.read().is_none()
    }
}

/// An ErrorResponse's SQLSTATE and message.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Parse, Bind and Execute of `SELECT 1` with `max_rows`, then Sync.
fn select_one(raw: &mut Raw, max_rows: i32) {
    raw.message(b'P', b"\0SELECT 1\0\0\0");
    raw.message(b'B', b"\0\0\0\0\0\0\0\0");
    let mut execute = b"\0".to_vec();
    execute.extend_from_slice(&max_rows.to_be_bytes());
    raw.message(b'E', &execute);
    raw.message(b'S', b"");
}

#[test]
fn a_hostile_network_cannot_lock_out_crash_or_bypass_the_pg_server() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    generated_lake(dir, 3, 3, "2024-03-01");
    // A user whose password is in a variable of any name (password_env).
    let config = dir.join("cryptolake.toml");
    std::fs::write(
        &config,
        "[server]\npg_max_connections = 2\n\n[[server.pg_users]]\nname = \"grafana\"\npassword_env = \"GRAFANA_PG_PASSWORD\"\n",
    )
    .unwrap();
    let envs = [
        (
            "CRYPTOLAKE_CONFIG".to_string(),
            config.display().to_string(),
        ),
        (
            "GRAFANA_PG_PASSWORD".to_string(),
            "a long enough secret".to_string(),
        ),
        ("CRYPTOLAKE_QUERY_TIMEOUT".to_string(), "20s".to_string()),
    ];
    let served = PgServed::start(dir, &["--pg", "127.0.0.1:0"], &envs);
    let dsn = format!(
        "host={} port={} dbname=cryptolake user=grafana password='a long enough secret'",
        served.host, served.port
    );
    let answers = || client(&["tls", &dsn])["value"] == json!(42);

    // Silent connections, more than pg_max_connections: users still sign in, and the silent
    // ones are closed after the sign-in timeout.
    let mut silent: Vec<Raw> = (0..6).map(|_| Raw::connect(&served)).collect();
    assert!(answers(), "locked out by silent connections");
    let started = Instant::now();
    assert!(silent[0].closed());
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "a silent client was kept {waited:?}"
    );
    silent.clear();

    // The signed-in user is current_user.
    let got = client(&["whoami", &dsn]);
    assert_eq!(
        got,
        json!({"current_user": "grafana", "session_user": "grafana"})
    );

    // A malformed SASL initial response ends that connection with a protocol error, and a
    // query sent after a failed sign-in is never run: the connection is closed.
    let mut raw = Raw::connect(&served);
    raw.startup("grafana");
    let sasl = raw.until(b'R').expect("the server asks for SASL");
    assert!(String::from_utf8_lossy(&sasl).contains("SCRAM-SHA-256"));
    raw.message(b'p', b"x\0");
    let (code, message) = error_fields(&raw.until(b'E').expect("an error"));
    assert_eq!(code, "08P01", "{message}");
    raw.message(b'Q', b"SELECT 1\0");
    assert!(
        raw.closed(),
        "the connection stayed open after a failed sign-in"
    );

    // A tampered nonce in the client-final message is refused.
    let mut raw = Raw::connect(&served);
    raw.startup("grafana");
    raw.until(b'R');
    let first = b"n,,n=,r=clientnonce0123456789";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    raw.message(b'p', &body);
    let cont = raw.until(b'R').expect("SASLContinue");
    assert!(String::from_utf8_lossy(&cont).contains("r=clientnonce0123456789"));
    raw.message(b'p', b"c=biws,r=someoneelsesnonce,p=AAAA");
    let (code, _) = error_fields(&raw.until(b'E').expect("an error"));
    assert_eq!(code, "28P01");
    assert!(raw.closed());
    // The client's part kept, the server's part changed: refused too.
    let mut raw = Raw::connect(&served);
    raw.startup("grafana");
    raw.until(b'R');
    raw.message(b'p', &body);
    raw.until(b'R').expect("SASLContinue");
    raw.message(
        b'p',
        b"c=biws,r=clientnonce0123456789notthenonceitgave,p=AAAA",
    );
    let (code, _) = error_fields(&raw.until(b'E').expect("an error"));
    assert_eq!(code, "28P01");
    assert!(raw.closed());

    // An unknown user's salt is the same on every attempt, as a known user's is: two attempts
    // do not tell whether a user exists.
    let salt = |user: &str| {
        let mut raw = Raw::connect(&served);
        raw.startup(user);
        raw.until(b'R');
        raw.message(b'p', &body);
        let cont = raw.until(b'R').expect("SASLContinue");
        let text = String::from_utf8_lossy(&cont[4..]).into_owned();
        text.split(',')
            .find_map(|a| a.strip_prefix("s=").map(str::to_string))
            .unwrap()
    };
    assert_eq!(salt("grafana"), salt("grafana"));
    assert_eq!(salt("nobody"), salt("nobody"));
    assert_ne!(salt("nobody"), salt("somebody"));

    // Signed in over the raw protocol (trust is not on: sign in through psycopg's DSN is
    // what drivers do; here a second server on loopback without users takes raw messages).
    drop(served);
    std::fs::write(&config, "[server]\npg_max_connections = 2\n").unwrap();
    let served = PgServed::start(dir, &["--pg", "127.0.0.1:0"], &envs);
    for max_rows in [-1, 0, i32::MAX] {
        let mut raw = Raw::connect(&served);
        raw.startup("tester");
        raw.until(b'Z').expect("ready for query");
        select_one(&mut raw, max_rows);
        let mut kinds = Vec::new();
        while let Some((k, _)) = raw.read() {
            kinds.push(k);
            if k == b'Z' {
                break;
            }
        }
        assert!(
            kinds.contains(&b'D') && kinds.contains(&b'C'),
            "max_rows {max_rows}: {kinds:?}"
        );
    }
    // A Bind whose parameter claims 2^31-1 bytes: a protocol error, not a panic.
    let mut raw = Raw::connect(&served);
    raw.startup("tester");
    raw.until(b'Z');
    raw.message(b'P', b"\0SELECT $1\0\0\0");
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&i32::MAX.to_be_bytes());
    bind.extend_from_slice(b"abc\0\0");
    raw.message(b'B', &bind);
    raw.message(b'S', b"");
    let (code, _) = error_fields(&raw.until(b'E').expect("an error"));
    assert_eq!(code, "08P01");
    assert!(raw.closed());

    // Cancel: the statement stops at once, and the connection answers again.
    let trust_dsn = served.dsn("");
    let got = client(&[
        "cancel",
        &trust_dsn,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ]);
    assert_eq!(got["code"], json!("57014"), "{got}");
    assert!(got["seconds"].as_f64().unwrap() < 5.0, "{got}");
    assert_eq!(got["after"], json!(42), "{got}");
    // Signed in without a password (loopback), a client is told what a signed-in one is.
    let got = client(&["params", &trust_dsn]);
    assert_eq!(got["is_superuser"], json!("off"), "{got}");
    assert_eq!(got["default_transaction_read_only"], json!("on"), "{got}");
    assert_eq!(got["search_path"], json!("crypto_analytics"), "{got}");
    assert!(
        !got["server_version"]
            .as_str()
            .unwrap_or_default()
            .contains("pgwire"),
        "{got}"
    );
    // Two connections get two backend keys.
    let other = client(&["cancel", &trust_dsn, "SELECT 1"]);
    assert_ne!(other["pid"], got["pid"], "{other} {got}");

    // The server is still up and answers.
    let (code, out, err) = psql(&served, &["-At", "-c", "SELECT 40 + 2"]);
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
}

#[test]
fn a_client_that_does_not_read_holds_no_more_than_the_memory_limit() {
    let envs = [(
        "CRYPTOLAKE_QUERY_MEMORY_LIMIT".to_string(),
        "128MiB".to_string(),
    )];
    let (_d, served) = served(&envs);
    // About 80 MB of result, more than half the limit.
    let big = "SELECT repeat('x', 1000) || CAST(value AS VARCHAR) AS v FROM range(80000)";
    let mut reader = Raw::connect(&served);
    reader.startup("tester");
    reader.until(b'Z').expect("ready for query");
    let mut query = big.as_bytes().to_vec();
    query.push(0);
    reader.message(b'Q', &query);
    // Its first rows arrive, then it stops reading.
    reader.until(b'D').expect("rows");
    std::thread::sleep(Duration::from_millis(500));
    // Another client's same statement does not fit beside the unread result.
    let (code, _, err) = psql(&served, &["-At", "-c", big]);
    assert_ne!(code, 0, "two unread results above the limit");
    assert!(
        err.contains("memory limit") || err.contains("resource"),
        "{err}"
    );
    // Small statements still answer.
    let (code, out, err) = psql(&served, &["-At", "-c", "SELECT 40 + 2"]);
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
    // Once the first client goes, the memory is free again.
    drop(reader);
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = psql(&served, &["-At", "-o", "/dev/null", "-c", big]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn at_most_two_statements_run_at_once_and_the_rest_wait_their_turn() {
    let envs = [("CRYPTOLAKE_QUERY_TIMEOUT".to_string(), "3s".to_string())];
    let (_d, served) = served(&envs);
    let endless =
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
    let spawn = |sql: &str| {
        psql_command(&served, &["-At", "-c", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let started = Instant::now();
    // Each of the two under its own 2 s statement_timeout, well inside the server's 3 s.
    let busy: Vec<_> = (0..2)
        .map(|_| spawn(&format!("SET statement_timeout = 2000; {endless}")))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    // A third statement, however small, waits for one of the two to end (at 2 s).
    let (code, out, err) = psql(&served, &["-At", "-c", "SELECT 40 + 2"]);
    let waited = started.elapsed();
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
    assert!(
        waited >= Duration::from_millis(1500),
        "it ran beside two others: {waited:?}"
    );
    for b in busy {
        let out = b.wait_with_output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("statement timeout"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
