//! End-to-end tests of the `cryptolake` binary against the simulated exchange over HTTP, each
//! in a fresh temporary directory, on local and S3 lakes.

mod support;

use std::path::{Path, PathBuf};

use support::run::*;

use chrono::{Duration, Utc};
use cryptolake_model::Symbol;
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};

const SEED: u64 = 5;

async fn sim() -> SimServer {
    SimServer::start(
        SimMarket::default_market(SEED),
        SimClock::Fixed(t("2024-03-04T12:00:30Z")),
        0,
    )
    .await
    .unwrap()
}

/// Every file under a directory with its bytes, to prove something did not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("_locks")
                && !p.to_string_lossy().contains("/ops/")
                // Rewritten with every run record, a failed step's too, like ops/runs.
                && !p.ends_with("_state/changed.json")
            {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

const GOLD_QUERY: &str = "SELECT symbol, date, open, high, low, close, volume, hours_present, is_complete FROM crypto_gold.ohlcv_1d ORDER BY symbol, date";

/// The pipeline as a user drives it, on whatever lake `lake` names. Returns gold as CSV.
fn pipeline_scenario(d: &Path, lake: &str, envs: &[(String, String)], url: &str) -> String {
    let run = |args: &[&str]| {
        let mut all = vec!["--lake", lake];
        all.extend_from_slice(args);
        ok_with(d, &all, envs)
    };
    let out = run(&[
        "ingest",
        "--base-url",
        url,
        "--symbols",
        "BTC-USDT,ETH-USDT",
        "--since",
        "2024-03-01",
        "--until",
        "2024-03-03",
    ]);
    assert!(out.contains("8 pages"), "{out}");
    assert!(out.contains("BTC-USDT: 2880 candles"), "{out}");
    run(&["silver"]);
    run(&["gold"]);

    // Gold agrees with the market computed directly, not through the pipeline.
    let market = SimMarket::default_market(SEED);
    let gold = run(&["sql", "--format", "csv", GOLD_QUERY]);
    let rows = csv_rows(&gold);
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let symbol = Symbol::parse(&row[0]).unwrap();
        let day = t(&row[1]);
        let first = market.candle(&symbol, day).unwrap();
        let last = market
            .candle(&symbol, day + Duration::minutes(1439))
            .unwrap();
        let r8 = |x: f64| format!("{x:.8}").parse::<f64>().unwrap();
        assert_eq!(row[2].parse::<f64>().unwrap(), r8(first.open), "{row:?}");
        assert_eq!(row[5].parse::<f64>().unwrap(), r8(last.close), "{row:?}");
        let volume: f64 = (0..1440)
            .map(|i| {
                r8(market
                    .candle(&symbol, day + Duration::minutes(i))
                    .unwrap()
                    .volume)
            })
            .sum();
        assert!(
            (row[6].parse::<f64>().unwrap() - volume).abs() < 1e-6 * volume,
            "{row:?}"
        );
        assert_eq!(row[7], "24");
        assert_eq!(row[8], "true");
    }

    // The partition column prunes and filters.
    let count = run(&[
        "sql",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM crypto_analytics.ohlcv_1h WHERE date = DATE '2024-03-02'",
    ]);
    assert_eq!(csv_rows(&count), vec![vec!["48".to_string()]]);

    // A re-run with nothing new writes nothing; a rebuild gives the same tables.
    let out = run(&["silver"]);
    assert!(
        out.contains("0 new bronze objects") && out.contains("0 partitions written"),
        "{out}"
    );
    let out = run(&["gold"]);
    assert!(out.contains("0 partitions written"), "{out}");
    let silver_query =
        "SELECT * FROM crypto_analytics.ohlcv_1h ORDER BY exchange, symbol, open_time";
    let silver_before = run(&["sql", "--format", "csv", silver_query]);
    run(&["silver", "--rebuild"]);
    run(&["gold", "--rebuild"]);
    assert_eq!(run(&["sql", "--format", "csv", GOLD_QUERY]), gold);
    assert_eq!(
        run(&["sql", "--format", "csv", silver_query]),
        silver_before
    );

    // Without --since, ingest continues where it stopped.
    let out = run(&[
        "ingest",
        "--base-url",
        url,
        "--symbols",
        "BTC-USDT",
        "--until",
        "2024-03-03T06:00:00Z",
    ]);
    assert!(
        out.contains("BTC-USDT: 360 candles, next from 2024-03-03T06:00:00+00:00"),
        "{out}"
    );
    run(&["silver"]);
    run(&["gold"]);
    let rows = csv_rows(&run(&[
        "sql",
        "--format",
        "csv",
        "SELECT symbol, hours_present, is_complete FROM crypto_gold.ohlcv_1d WHERE date = DATE '2024-03-03'",
    ]));
    assert_eq!(
        rows,
        vec![vec!["BTC-USDT".to_string(), "6".into(), "false".into()]]
    );

    // JSON output.
    let json = run(&[
        "sql",
        "--format",
        "json",
        "SELECT symbol, hours_present FROM crypto_gold.ohlcv_1d WHERE date = DATE '2024-03-03'",
    ]);
    assert_eq!(json.trim(), r#"[{"symbol":"BTC-USDT","hours_present":6}]"#);
    gold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_a_local_lake() {
    let server = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline_scenario(d, "lake", &[], &server.base_url());

    // Parquet as the design says: microsecond UTC timestamps, zstd.
    let file = d.join("lake/silver/ohlcv_1h/date=2024-03-01/part-00000.parquet");
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let col = meta.row_group(0).column(4);
    assert_eq!(col.column_path().string(), "open_time");
    assert!(
        col.compression().to_string().starts_with("ZSTD"),
        "{}",
        col.compression()
    );
    let schema = format!(
        "{:?}",
        meta.file_metadata()
            .schema_descr()
            .column(4)
            .logical_type_ref()
    );
    assert!(
        schema.contains("MICROS") && schema.contains("is_adjusted_to_u_t_c: true"),
        "{schema}"
    );

    // Nothing new: not one byte of silver or gold changes.
    let before = snapshot(&d.join("lake/silver"));
    let gold_before = snapshot(&d.join("lake/gold"));
    ok(d, &["silver"]);
    ok(d, &["gold"]);
    assert_eq!(snapshot(&d.join("lake/silver")), before);
    assert_eq!(snapshot(&d.join("lake/gold")), gold_before);

    // Late data: a backfill of an older day updates exactly that day's partitions.
    ok(
        d,
        &[
            "ingest",
            "--base-url",
            &server.base_url(),
            "--symbols",
            "ETH-USDT",
            "--since",
            "2024-02-29",
            "--until",
            "2024-03-01",
        ],
    );
    let out = ok(d, &["silver"]);
    assert!(out.contains("1 partitions written (24 hours)"), "{out}");
    let out = ok(d, &["gold"]);
    assert!(out.contains("gold: 1 partitions written (1 rows)"), "{out}");
    let mut after: Vec<_> = snapshot(&d.join("lake/silver"));
    after.retain(|(p, _)| !p.to_string_lossy().contains("date=2024-02-29"));
    assert_eq!(
        after, before,
        "only the late day's silver partition may change"
    );
    let mut gold_after = snapshot(&d.join("lake/gold"));
    gold_after.retain(|(p, _)| !p.to_string_lossy().contains("date=2024-02-29"));
    assert_eq!(gold_after, gold_before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_an_s3_lake_matches_the_local_one() {
    let server = sim().await;
    let s3 = support::SeaweedFs::start("cryptolake-test");
    let dir = tempfile::tempdir().unwrap();
    // On S3 the first build goes a date at a time (each batch a ranged listing of each symbol
    // folder); locally in one batch: the same lake either way.
    let mut env = s3.env();
    env.push(("CRYPTOLAKE_SILVER_BATCH_DAYS".into(), "1".into()));
    let on_s3 = pipeline_scenario(
        dir.path(),
        "s3://cryptolake-test/some/prefix",
        &env,
        &server.base_url(),
    );
    let local_dir = tempfile::tempdir().unwrap();
    let local = pipeline_scenario(local_dir.path(), "lake", &[], &server.base_url());
    assert_eq!(on_s3, local);
    // Nothing was written locally for the S3 lake.
    assert!(!dir.path().join("lake").exists());
    // Credentials are required: without them the store refuses, with one clear error.
    let r = cryptolake_with(
        dir.path(),
        &["--lake", "s3://cryptolake-test/some/prefix", "gold"],
        &[
            ("CRYPTOLAKE_S3_ENDPOINT".into(), s3.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "wrong".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(
        r.stderr.contains("s3://cryptolake-test/some/prefix"),
        "{}",
        r.stderr
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_refuses_to_write_and_bad_input_changes_nothing() {
    let server = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = server.base_url();
    ok(
        d,
        &[
            "ingest",
            "--base-url",
            &url,
            "--symbols",
            "SOL-USDT",
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-02",
        ],
    );
    ok(d, &["silver"]);
    ok(d, &["gold"]);
    let before = snapshot(&d.join("lake"));
    for sql in [
        "DROP TABLE crypto_gold.ohlcv_1d",
        "INSERT INTO crypto_gold.ohlcv_1d SELECT * FROM crypto_gold.ohlcv_1d",
        "COPY (SELECT * FROM crypto_gold.ohlcv_1d) TO 'lake/gold/ohlcv_1d/date=2024-03-01/x.parquet'",
        "CREATE TABLE x AS SELECT 1",
        "DELETE FROM crypto_analytics.ohlcv_1h",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let r = cryptolake(d, &["sql", sql]);
        assert_ne!(r.code, 0, "{sql} should fail");
        assert!(r.stderr.contains("read-only"), "{sql}: {}", r.stderr);
    }
    let r = cryptolake(d, &["sql", "SELECT nope FROM crypto_gold.ohlcv_1d"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);

    for (args, needle) in [
        (
            vec!["ingest", "--base-url", url.as_str(), "--symbols", "../x"],
            "../x",
        ),
        (
            vec![
                "ingest",
                "--base-url",
                url.as_str(),
                "--symbols",
                "btc-usdt",
            ],
            "btc-usdt",
        ),
        (
            vec![
                "ingest",
                "--base-url",
                url.as_str(),
                "--symbols",
                "SOL-USDT",
                "--since",
                "last week",
            ],
            "last week",
        ),
        (
            vec!["ingest", "--base-url", "ftp://x", "--symbols", "SOL-USDT"],
            "ftp://x",
        ),
        (vec!["ingest", "--exchange", "mtgox"], "mtgox"),
        (vec!["sql", "--format", "xml", "SELECT 1"], "xml"),
    ] {
        let r = cryptolake(d, &args);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{}",
            r.stderr
        );
    }
    // An exchange's refusal is reported with its message, and nothing is written for it.
    let r = cryptolake(
        d,
        &[
            "ingest",
            "--base-url",
            &url,
            "--symbols",
            "XRP-USDT",
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-02",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("Invalid symbol"), "{}", r.stdout);
    assert_eq!(snapshot(&d.join("lake")), before);

    // An unwritable lake directory and an unreachable store: one line naming the lake.
    let ro = d.join("readonly");
    std::fs::create_dir_all(&ro).unwrap();
    let r = cryptolake(d, &["--lake", "/proc/cryptolake-lake", "gold"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/proc/cryptolake-lake"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let r = cryptolake_with(
        d,
        &["--lake", "s3://nowhere/lake", "gold"],
        &[
            ("CRYPTOLAKE_S3_ENDPOINT".into(), "http://127.0.0.1:9".into()),
            ("AWS_ACCESS_KEY_ID".into(), "x".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "y".into()),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("s3://nowhere/lake"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    // Config: unknown keys are named, in the file and in the environment.
    std::fs::write(
        d.join("cryptolake.toml"),
        "lake = \"lake\"\n[exchanges.binance]\nsymbol = [\"BTC-USDT\"]\n",
    )
    .unwrap();
    let r = cryptolake(d, &["silver"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("symbol") && r.stderr.contains("line 3"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(d.join("cryptolake.toml")).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cryptolake"));
    let out = cmd
        .current_dir(d)
        .args(["silver"])
        .env("CRYPTOLAKE_LAEK", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CRYPTOLAKE_LAEK"));
    assert_eq!(snapshot(&d.join("lake")), before);
    server.stop().await;
}

#[test]
fn commands_that_only_read_never_create_a_lake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["--lake", "tpyo", "sql", "SELECT 1"][..],
        &["--lake", "tpyo", "runs"],
        &["--lake", "tpyo", "gaps"],
        &["--lake", "tpyo", "check"],
    ] {
        let r = cryptolake(d, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains("no lake at tpyo"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(!d.join("tpyo").exists(), "{args:?} created the lake");
    }
    // DDL for a lake still to be made names where it will be, and makes nothing.
    let ddl = ok(
        d,
        &["--lake", "tpyo", "catalog", "ddl", "--engine", "duckdb"],
    );
    assert!(
        ddl.contains(&format!("{}/tpyo/silver/ohlcv_1h", d.display())),
        "{ddl}"
    );
    assert!(!d.join("tpyo").exists());
}

#[test]
fn init_writes_a_config_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    let text = std::fs::read_to_string(d.join("cryptolake.toml")).unwrap();
    assert!(text.contains("lake = \"file://./lake\""));
    let r = cryptolake(d, &["init"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    // The written file is what the commands read.
    let out = ok(d, &["gold"]);
    assert!(out.contains("gold: 0 partitions written"), "{out}");
    assert!(d.join("lake").is_dir());
}

#[test]
fn demo_runs_offline_and_leaves_a_queryable_lake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(d, &["demo", "--days", "1"]);
    assert!(out.contains("simulated exchange"), "{out}");
    assert!(out.contains("Daily candles (gold)"), "{out}");
    let rows = csv_rows(&ok(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT exchange, count(DISTINCT symbol) FROM crypto_gold.ohlcv_1d WHERE is_complete GROUP BY exchange ORDER BY exchange",
        ],
    ));
    // Coinbase's days are complete too: the demo's refetch confirmed the minutes Coinbase
    // leaves out (no trades). Kraken holds only the last ten to eleven hours. Ordered by name.
    let row = |e: &str, n: &str| vec![e.to_string(), n.to_string()];
    assert_eq!(
        rows,
        vec![
            row("binance", "4"),
            row("bybit", "4"),
            row("coinbase", "3"),
            row("okx", "4")
        ]
    );
    // A second demo continues the same lake.
    ok(d, &["demo", "--days", "1"]);
    // It refuses a lake with other data.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("lake/bronze/x")).unwrap();
    std::fs::write(other.path().join("lake/bronze/x/y"), b"1").unwrap();
    let r = cryptolake(other.path(), &["demo"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not from a demo"), "{}", r.stderr);
}

#[test]
fn sql_shell_reads_statements_until_quit() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lake")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cryptolake"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .args(["sql"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 40 +\n 2 AS answer;\nDROP TABLE crypto_gold.ohlcv_1d;\nSELECT count(*) AS n FROM crypto_gold.ohlcv_1d;\nSELECT 7 AS seven; -- a comment after the end\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("| 42     |"), "{stdout}");
    assert!(stderr.contains("read-only"), "{stderr}");
    // An empty lake is an empty table, not an error.
    assert!(stdout.contains("| 0 |"), "{stdout}");
    // A comment after the `;` does not keep the statement open.
    assert!(stdout.contains("| 7     |"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_runs_the_job_and_stops_on_sigterm() {
    let server = SimServer::start(SimMarket::default_market(SEED), SimClock::Real, 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cryptolake"))
        .current_dir(d)
        .env("CRYPTOLAKE_BINANCE_BASE_URL", server.base_url())
        .env("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT")
        .env("CRYPTOLAKE_INGEST_LOOKBACK", "3h")
        .env("CRYPTOLAKE_LOG", "info")
        // Every two seconds (croner takes an optional seconds field).
        .args(["schedule", "--cron", "*/2 * * * * *"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gold = d.join("lake/gold/ohlcv_1d");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !gold.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(gold.exists(), "the scheduled run never built gold");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the scheduler did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("run finished"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    // A second scheduler start sees the state and would catch up; the slot record is there.
    assert!(d.join("lake/_state/schedule.json").exists());
    server.stop().await;
}

/// The tables as CSV, for comparing two lakes.
fn tables_csv(d: &Path, lake: &str, envs: &[(String, String)]) -> (String, String) {
    let silver = ok_with(
        d,
        &[
            "--lake",
            lake,
            "sql",
            "--format",
            "csv",
            "SELECT exchange, symbol, open_time, open, high, low, close, volume, quote_volume, trade_count, minutes_present, date FROM crypto_analytics.ohlcv_1h ORDER BY exchange, symbol, open_time",
        ],
        envs,
    );
    let gold = ok_with(
        d,
        &["--lake", lake, "sql", "--format", "csv", GOLD_QUERY],
        envs,
    );
    (silver, gold)
}

/// Several `cryptolake run` processes started together on one lake: every one finishes, and
/// the tables are exactly what a rebuild from bronze gives (nothing torn, lost or doubled).
async fn concurrent_runs_on(lake: &str, envs: Vec<(String, String)>) {
    let server = SimServer::start(SimMarket::default_market(SEED), SimClock::Real, 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut envs = envs;
    envs.extend([
        ("CRYPTOLAKE_BINANCE_BASE_URL".to_string(), server.base_url()),
        (
            "CRYPTOLAKE_BINANCE_SYMBOLS".into(),
            "BTC-USDT,ETH-USDT,SOL-USDT".into(),
        ),
        ("CRYPTOLAKE_INGEST_LOOKBACK".into(), "2d".into()),
    ]);
    let children: Vec<_> = (0..3)
        .map(|_| {
            command(d, &["--lake", lake, "--wait-lock", "120", "run"], &envs)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (silver, gold) = tables_csv(d, lake, &envs);
    let hours = csv_rows(&silver);
    assert!(hours.len() >= 3 * 47, "{} hours", hours.len());
    let mut keys: Vec<_> = hours.iter().map(|r| (r[1].clone(), r[2].clone())).collect();
    keys.dedup();
    assert_eq!(keys.len(), hours.len(), "duplicate hours in silver");
    // Every simulated minute exists; only each symbol's first hour starts mid-hour (lookback).
    for (i, r) in hours.iter().enumerate() {
        let first_of_symbol = i == 0 || hours[i - 1][1] != r[1];
        assert!(first_of_symbol || r[10] == "60", "{r:?}");
    }
    ok_with(d, &["--lake", lake, "silver", "--rebuild"], &envs);
    ok_with(d, &["--lake", lake, "gold", "--rebuild"], &envs);
    assert_eq!(tables_csv(d, lake, &envs), (silver, gold));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_on_a_local_lake() {
    concurrent_runs_on("lake", Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_on_an_s3_lake() {
    let s3 = support::SeaweedFs::start("cryptolake-concurrency");
    concurrent_runs_on("s3://cryptolake-concurrency/lake", s3.env()).await;
}

#[test]
fn a_live_lease_makes_the_loser_exit_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["gold"]);
    // A lease held by a live process (this test) that will not expire soon.
    let machine = format!(
        "{}/{}",
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim(),
        std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let doc = serde_json::json!({
        "owner": "pid 1 run elsewhere",
        "machine": machine,
        "pid": std::process::id(),
        "acquired_at": Utc::now().to_rfc3339(),
        "expires_at": (Utc::now() + Duration::hours(1)).to_rfc3339(),
        "released": false
    });
    let locks = d.join("lake/_locks/transform");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::write(locks.join("00000000000000000099.json"), doc.to_string()).unwrap();
    let r = cryptolake(d, &["silver"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("held by pid 1 run elsewhere") && r.stderr.contains("--wait-lock"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

/// Kills ingest, silver and gold with SIGKILL at random moments, then lets the pipeline finish:
/// the tables must equal those of a run that was never interrupted. More iterations:
/// `CRYPTOLAKE_CRASH_ITERATIONS=200 cargo nextest run -p cryptolake crash`.
async fn crash_scenario(crashed: &str, envs: &[(String, String)]) {
    let iterations: usize = std::env::var("CRYPTOLAKE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let server = sim().await;
    let url = server.base_url();
    let ingest = |lake: &str| -> Vec<String> {
        [
            "--lake",
            lake,
            "ingest",
            "--base-url",
            &url,
            "--symbols",
            "BTC-USDT,ETH-USDT,SOL-USDT",
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-04",
            "--concurrency",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let as_strs = |v: &[String]| v.iter().map(String::clone).collect::<Vec<String>>();

    // The reference: a local lake, never interrupted.
    let reference = ingest("reference");
    ok(d, &reference.iter().map(String::as_str).collect::<Vec<_>>());
    ok(d, &["--lake", "reference", "silver"]);
    ok(d, &["--lake", "reference", "gold"]);
    let expected = tables_csv(d, "reference", &[]);

    let steps: [Vec<String>; 3] = [
        as_strs(&ingest(crashed)),
        as_strs(&["--lake".into(), crashed.into(), "silver".into()]),
        as_strs(&["--lake".into(), crashed.into(), "gold".into()]),
    ];
    let mut killed = 0;
    for i in 0..iterations {
        let step: Vec<&str> = steps[i % 3].iter().map(String::as_str).collect();
        let mut child = command(d, &step, envs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = support::random_u64() % 400;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed > 0 || iterations == 0, "no process was interrupted");
    // Recovery: the same commands, uninterrupted.
    for step in &steps {
        ok_with(
            d,
            &step.iter().map(String::as_str).collect::<Vec<_>>(),
            envs,
        );
    }
    assert_eq!(tables_csv(d, crashed, envs), expected);

    if !crashed.starts_with("s3://") {
        // Readers globbing a table see exactly the partition files, nothing staged or stale.
        for table in ["silver/ohlcv_1h", "gold/ohlcv_1d"] {
            for (path, _) in snapshot(&d.join(crashed).join(table)) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!(name, "part-00000.parquet", "stray file {}", path.display());
            }
        }
        // Every bronze object is whole.
        let lake = cryptolake_lake::Lake::open(d.join(crashed).to_str().unwrap()).unwrap();
        let objects = lake
            .list(&cryptolake_lake::paths::bronze_root())
            .await
            .unwrap();
        assert!(!objects.is_empty());
        for meta in objects {
            let bytes = lake.get(&meta.location).await.unwrap();
            cryptolake_lake::bronze::decode(meta.location.as_ref(), &bytes).unwrap();
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_point_on_a_local_lake() {
    crash_scenario("crashed", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_point_on_an_s3_lake() {
    let s3 = support::SeaweedFs::start("cryptolake-crash");
    crash_scenario("s3://cryptolake-crash/lake", &s3.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_rules_report_gaps_and_check_fails_on_fail_rules() {
    let server = sim().await;
    let url = server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A hole from 10:30 to 10:45: hour 10 has 45 minutes.
    ok(
        d,
        &[
            "ingest",
            "--base-url",
            &url,
            "--symbols",
            "BTC-USDT",
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-01T10:30:00Z",
        ],
    );
    ok(
        d,
        &[
            "ingest",
            "--base-url",
            &url,
            "--symbols",
            "BTC-USDT",
            "--since",
            "2024-03-01T10:45:00Z",
            "--until",
            "2024-03-02",
        ],
    );
    ok(d, &["silver"]);
    ok(d, &["gold"]);
    let results = csv_rows(&ok(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT step, rule, status, subject, observed FROM crypto_ops.quality_results WHERE status = 'violation' AND rule = 'completeness' ORDER BY step",
        ],
    ));
    assert_eq!(
        results,
        vec![vec![
            "silver".to_string(),
            "completeness".into(),
            "violation".into(),
            "2024-03-01T10:00:00+00:00".into(),
            "45.0".into()
        ]]
    );
    // Warn rules: check reports and succeeds.
    let out = ok(d, &["check"]);
    assert!(
        out.contains(
            "completeness binance BTC-USDT at 2024-03-01T10:00:00+00:00: hour has 45 of 60 minutes"
        ),
        "{out}"
    );
    // The same rule with action fail: check exits 1 and names the rows.
    std::fs::write(
        d.join("cryptolake.toml"),
        "[quality.completeness]\naction = \"fail\"\n",
    )
    .unwrap();
    let r = cryptolake(d, &["check", "--from", "2024-03-01", "--to", "2024-03-01"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("violation(s) of quality rules with action fail")
            && r.stderr.contains("2024-03-01T10:00:00"),
        "{}",
        r.stderr
    );
    // A range without the gap passes.
    let r = cryptolake(d, &["check", "--from", "2024-03-02"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Each check is in the run history, the failing one as failed.
    let runs = csv_rows(&ok(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT status FROM crypto_ops.runs WHERE step = 'check' ORDER BY started_at",
        ],
    ));
    assert_eq!(
        runs,
        vec![
            vec!["ok".to_string()],
            vec!["failed".into()],
            vec!["ok".into()]
        ]
    );
    server.stop().await;
}

#[test]
fn flags_are_typed_and_a_wrong_value_names_the_flag_and_the_choices() {
    let d = tempfile::tempdir().unwrap();
    let lake = d.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let lake = lake.display().to_string();
    for (args, names) in [
        (
            vec!["sql", "--format", "xml", "SELECT 1"],
            vec![
                "--format",
                "unknown output format \"xml\" (table, csv, json)",
            ],
        ),
        (
            vec!["runs", "--format", "parquet"],
            vec!["--format", "\"parquet\""],
        ),
        (
            vec!["gaps", "--exchange", "bitfinex"],
            vec!["--exchange", "unknown exchange \"bitfinex\""],
        ),
        (
            vec!["import", "binance-archive", "x.zip", "--market", "options"],
            vec!["--market", "spot", "futures"],
        ),
    ] {
        let mut all = vec!["--lake", lake.as_str()];
        all.extend(args.iter().copied());
        let r = cryptolake(d.path(), &all);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        for n in names {
            assert!(r.stderr.contains(n), "{args:?}: {n} not in {}", r.stderr);
        }
    }
    // The right values still work.
    let r = cryptolake(
        d.path(),
        &["--lake", &lake, "sql", "--format", "csv", "SELECT 1 AS one"],
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "one\n1"), "{}", r.stderr);
}

/// The front ends name only the model, the pipeline and (the CLI) the server among the
/// project's crates, so every path to the query engine, the lake and the sources goes through
/// the pipeline, as `cargo tree` shows. Test-only dependencies do not count.
#[test]
fn front_ends_reach_the_lake_only_through_the_pipeline() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (front_end, allowed) in [
        (
            "cli",
            &[
                "cryptolake-model",
                "cryptolake-pipeline",
                "cryptolake-server",
            ][..],
        ),
        ("server", &["cryptolake-model", "cryptolake-pipeline"][..]),
        ("lambda", &["cryptolake-model", "cryptolake-pipeline"][..]),
    ] {
        let manifest = std::fs::read_to_string(crates.join(front_end).join("Cargo.toml")).unwrap();
        let mut section = String::new();
        let mut named = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let name = line.split(['=', ' ']).next().unwrap_or("");
            if name.starts_with("cryptolake-")
                && section.ends_with("dependencies]")
                && !section.contains("dev-")
            {
                named.push(name.to_string());
            }
        }
        assert!(
            !named.is_empty(),
            "{front_end}: no project crate found in its manifest"
        );
        for name in &named {
            assert!(
                allowed.contains(&name.as_str()),
                "{front_end} depends on {name}: front ends reach it through cryptolake-pipeline"
            );
        }
    }
}

#[test]
fn ingest_data_names_what_a_spot_market_does_not_have() {
    let d = tempfile::tempdir().unwrap();
    let lake = d.path().join("lake").display().to_string();
    let r = cryptolake(
        d.path(),
        &[
            "--lake",
            &lake,
            "ingest",
            "--exchange",
            "binance",
            "--data",
            "candles,funding",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--data Funding") && r.stderr.contains("not a perpetual market"),
        "{}",
        r.stderr
    );
    let r = cryptolake(
        d.path(),
        &[
            "--lake",
            &lake,
            "ingest",
            "--exchange",
            "okx-swap",
            "--data",
            "fees",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("fees"), "{}", r.stderr);
}
