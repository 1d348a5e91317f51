//! Hostile input gets an error, never the machine: each input a misbehaving exchange, a bad
//! configuration, a hostile SQL user or a damaged lake can bring, through the binary. Where
//! memory is the point, the child's peak RSS (its own rusage) is held under a bound.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use cryptolake_sources::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use support::run::*;

/// "A few hundred MB": what any of these inputs may cost the process at most.
const RSS_BOUND: u64 = 300 << 20;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lake_of(d: &Path) -> String {
    d.join("lake").display().to_string()
}

/// Runs the binary on the test's lake, measuring its peak RSS.
fn on_lake(d: &Path, args: &[&str], envs: &[(String, String)]) -> (Run, u64) {
    let lake = lake_of(d);
    let mut all = vec!["--lake", lake.as_str()];
    all.extend_from_slice(args);
    cryptolake_rss(d, &all, envs)
}

/// The run failed with exit status 1 and exactly one `error:` line, which holds `needle`.
fn fails_with(r: &Run, needle: &str) {
    assert_eq!(r.code, 1, "exit status\n{}\n{}", r.stdout, r.stderr);
    let errors = error_lines(&r.stderr);
    assert_eq!(errors.len(), 1, "one error line:\n{}", r.stderr);
    assert!(
        errors[0].contains(needle),
        "{needle:?} not in {:?}\n{}",
        errors[0],
        r.stdout
    );
}

/// Peak RSS under `bound`; printed with the test's line, for the record.
#[track_caller]
fn bounded(rss: u64, bound: u64) {
    let at = std::panic::Location::caller();
    eprintln!(
        "peak RSS {} MiB at line {} (bound {} MiB)",
        rss >> 20,
        at.line(),
        bound >> 20
    );
    assert!(rss < bound, "peak RSS {} MiB", rss >> 20);
}

fn bronze_objects(d: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|x| x == "bronze") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&d.join("lake/bronze"), &mut n);
    n
}

async fn sim_with(fault: Fault) -> SimServer {
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T12:00:30Z")));
    options.faults = FaultPlan {
        rate: 1.0,
        kinds: vec![fault],
        ..FaultPlan::none()
    };
    SimServer::start_with(SimMarket::default_market(3), options, 0)
        .await
        .unwrap()
}

/// One symbol's ten minutes from the simulated exchange, off the async test's threads.
async fn ingest_ten_minutes(d: &Path, url: String, envs: Vec<(String, String)>) -> (Run, u64) {
    let d = d.to_path_buf();
    tokio::task::spawn_blocking(move || {
        on_lake(
            &d,
            &[
                "ingest",
                "--symbols",
                "BTC-USDT",
                "--since",
                "2024-03-01T00:00:00Z",
                "--until",
                "2024-03-01T00:10:00Z",
                "--base-url",
                &url,
            ],
            &envs,
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_abandoned_at_the_limit_and_never_stored() {
    let d = tempfile::tempdir().unwrap();
    let sim = sim_with(Fault::Oversized).await;
    let (r, rss) = ingest_ten_minutes(d.path(), sim.base_url(), Vec::new()).await;
    fails_with(&r, "BTC-USDT");
    assert!(
        r.stdout.contains("past the limit of 16777216 bytes"),
        "{}",
        r.stdout
    );
    bounded(rss, RSS_BOUND);
    assert_eq!(bronze_objects(d.path()), 0);
    // A lower configured limit is the one applied.
    let (r, _) = ingest_ten_minutes(
        d.path(),
        sim.base_url(),
        env(&[("CRYPTOLAKE_BINANCE_MAX_RESPONSE_SIZE", "64KiB")]),
    )
    .await;
    assert!(
        r.stdout.contains("past the limit of 65536 bytes"),
        "{}",
        r.stdout
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_longer_than_its_window_is_refused_and_never_stored() {
    let d = tempfile::tempdir().unwrap();
    let sim = sim_with(Fault::Overlong).await;
    let (r, rss) = ingest_ten_minutes(d.path(), sim.base_url(), Vec::new()).await;
    fails_with(&r, "BTC-USDT");
    assert!(
        r.stdout
            .contains("the page has 20000 rows; a request for this window holds at most 10"),
        "{}",
        r.stdout
    );
    bounded(rss, RSS_BOUND);
    assert_eq!(bronze_objects(d.path()), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_year_ban_is_held_to_three_days_and_says_how_to_clear_it() {
    let d = tempfile::tempdir().unwrap();
    let sim = sim_with(Fault::LongBan).await;
    let (first, _) = ingest_ten_minutes(d.path(), sim.base_url(), Vec::new()).await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    let ban: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("lake/_state/ingest/binance/ban.json")).unwrap(),
    )
    .unwrap();
    let at = |k: &str| t(ban[k].as_str().unwrap());
    let length = at("until") - at("noticed_at");
    assert!(
        length <= chrono::Duration::days(3) && length > chrono::Duration::days(2),
        "{ban}"
    );
    let (second, _) = ingest_ten_minutes(d.path(), sim.base_url(), Vec::new()).await;
    fails_with(&second, "delete _state/ingest/binance/ban.json in the lake");
    sim.stop().await;
}

#[test]
fn settings_and_flags_out_of_range_are_one_error_line_never_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("hostile.toml");
    std::fs::write(&config, "[ingest]\nlookback = \"9223372036854775807m\"\n").unwrap();
    let config = config.display().to_string();
    // (arguments, environment, what the error line names)
    type Case<'a> = (Vec<&'a str>, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--config", &config, "sql", "SELECT 1"],
            vec![],
            "ingest.lookback",
        ),
        (
            vec!["sql", "SELECT 1"],
            env(&[("CRYPTOLAKE_INGEST_REQUEST_TIMEOUT", "9223372036854775807s")]),
            "CRYPTOLAKE_INGEST_REQUEST_TIMEOUT",
        ),
        (
            vec!["ingest", "--lookback", "99999999999d"],
            vec![],
            "--lookback",
        ),
        (
            vec!["sql", "SELECT 1"],
            env(&[("CRYPTOLAKE_QUERY_MEMORY_LIMIT", "99999999999999TiB")]),
            "CRYPTOLAKE_QUERY_MEMORY_LIMIT",
        ),
        (vec!["ingest", "--since", "99999-01-01"], vec![], "--since"),
        (
            vec!["--clock-at=-262144-01-01T00:00:00Z", "run"],
            vec![],
            "--clock-at",
        ),
        (
            vec!["--clock-at=0001-01-01T00:00:00Z", "run"],
            vec![],
            "outside 1970-01-01 to 9999-12-31",
        ),
    ];
    for (args, envs, needle) in cases {
        let (r, _) = on_lake(d.path(), &args, &envs);
        assert_ne!(r.code, 101, "{args:?} panicked:\n{}", r.stderr);
        fails_with(&r, needle);
    }
    // Times at the very ends of the accepted range: whatever the command makes of them, it
    // never panics.
    for args in [
        vec![
            "--clock-at=9999-12-31T23:59:59Z",
            "ingest",
            "--base-url",
            "http://127.0.0.1:9",
        ],
        vec![
            "--clock-at=1970-01-01T00:00:00Z",
            "ingest",
            "--base-url",
            "http://127.0.0.1:9",
        ],
        vec!["gaps", "--from", "1970-01-01", "--to", "9999-12-31"],
        vec!["check", "--from", "9999-12-31"],
        vec![
            "ingest",
            "--since",
            "9999-12-31",
            "--base-url",
            "http://127.0.0.1:9",
        ],
    ] {
        let (r, _) = on_lake(d.path(), &args, &[]);
        assert_ne!(r.code, 101, "{args:?} panicked:\n{}", r.stderr);
        assert!(error_lines(&r.stderr).len() <= 1, "{args:?}:\n{}", r.stderr);
    }
}

/// A small lake from the benchmark's generator: 3 symbols, 3 days, silver and gold built.
fn small_lake(d: &Path) {
    generated_lake(d, 3, 3, "2024-03-01");
}

fn sql(d: &Path, query: &str, envs: &[(String, String)]) -> (Run, u64) {
    on_lake(d, &["sql", "--format", "csv", query], envs)
}

#[test]
fn hostile_sql_ends_in_a_clear_error_within_its_limits() {
    let d = tempfile::tempdir().unwrap();
    small_lake(d.path());

    let (r, rss) = sql(d.path(), "SELECT repeat('x', 2000000000)", &[]);
    fails_with(&r, "repeat() would produce about 1.9 GiB");
    bounded(rss, RSS_BOUND);

    // Every function whose output or work the statement chooses is capped before it runs, under
    // a 256 MiB limit (32 MiB for one function's output).
    let small = env(&[("CRYPTOLAKE_QUERY_MEMORY_LIMIT", "256MiB")]);
    for (statement, says) in [
        (
            "SELECT cardinality(array_resize([1], 350000000, 0))",
            "array_resize() would produce",
        ),
        (
            // 100 kB, then 3 MB (allowed), then 90 MB (refused). From 1 MB the allowed step
            // is 29 MiB, just under the cap, and DataFusion's copies of it alone take the
            // process to the RSS bound.
            "SELECT length(replace(replace(replace(repeat('a', 100000), 'a', repeat('b', 30)), 'b', repeat('c', 30)), 'c', repeat('d', 30)))",
            "replace() would produce",
        ),
        (
            "SELECT cardinality(flatten(array_repeat(array_repeat(1, 20000), 20000)))",
            "array_repeat() would produce",
        ),
        (
            "SELECT cardinality(range(TIMESTAMP '2020-01-01 00:00:00', TIMESTAMP '2021-01-01 00:00:00', INTERVAL '1 second'))",
            "range() would produce",
        ),
        (
            "SELECT length(regexp_replace(repeat('a', 100000), 'a', '$0$0$0$0', 'g'))",
            "regexp_replace() would produce",
        ),
        (
            "SELECT levenshtein(repeat('a', 150000), repeat('b', 150000))",
            "levenshtein() over these texts",
        ),
    ] {
        let started = std::time::Instant::now();
        let (r, rss) = sql(d.path(), statement, &small);
        fails_with(&r, says);
        bounded(rss, RSS_BOUND);
        assert!(
            started.elapsed().as_secs() < 10,
            "{statement}: {:?}",
            started.elapsed()
        );
    }
    // Plans name the tables' keys, never where the lake is kept.
    for statement in [
        "EXPLAIN SELECT * FROM crypto_analytics.ohlcv_1h",
        "EXPLAIN ANALYZE SELECT sum(volume) FROM crypto_analytics.ohlcv_1h",
    ] {
        let (r, _) = sql(d.path(), statement, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("ohlcv_1h/date="), "{}", r.stdout);
        let root = d.path().display().to_string();
        assert!(
            !r.stdout.contains(root.trim_start_matches('/')),
            "{}",
            r.stdout
        );
    }
    // Ordinary uses of the same functions answer.
    let (r, _) = sql(
        d.path(),
        "SELECT replace('BTC-USDT', '-', '/') AS a, levenshtein('kitten', 'sitting') AS b, \
         cardinality(range(DATE '2024-01-01', DATE '2024-12-31', INTERVAL '1 day')) AS c, \
         cardinality(array_resize([1, 2], 5, 0)) AS d, regexp_replace('a-b-c', '-', '_', 'g') AS e",
        &small,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "a,b,c,d,e\nBTC/USDT,3,365,5,a_b_c");

    let started = std::time::Instant::now();
    let (r, rss) = sql(
        d.path(),
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT count(*) FROM r",
        &env(&[("CRYPTOLAKE_QUERY_TIMEOUT", "3s")]),
    );
    fails_with(&r, "time limit of 3s");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    bounded(rss, RSS_BOUND);

    // 216 hours squared, times 10,000: 466 M rows to sort, far past 128 MiB of memory and
    // 256 MiB of spill.
    let limits = env(&[
        ("CRYPTOLAKE_QUERY_MEMORY_LIMIT", "128MiB"),
        ("CRYPTOLAKE_QUERY_SPILL_LIMIT", "256MiB"),
        ("CRYPTOLAKE_QUERY_TIMEOUT", "60s"),
    ]);
    let started = std::time::Instant::now();
    let (r, rss) = sql(
        d.path(),
        "SELECT a.close, b.close, n.value FROM ohlcv_1h a CROSS JOIN ohlcv_1h b \
         CROSS JOIN range(10000) n ORDER BY random()",
        &limits,
    );
    fails_with(&r, "limit");
    assert!(started.elapsed().as_secs() < 90, "{:?}", started.elapsed());
    bounded(rss, RSS_BOUND + (128 << 20));

    // A result larger than the memory limit is refused as it arrives.
    let (r, rss) = sql(
        d.path(),
        "SELECT a.*, n.value FROM ohlcv_1h a CROSS JOIN ohlcv_1h b CROSS JOIN range(1000) n",
        &limits,
    );
    fails_with(&r, "the result is larger than the memory limit of 128 MiB");
    bounded(rss, RSS_BOUND + (128 << 20));

    // Ordinary queries still answer under the same limits.
    let (r, _) = sql(d.path(), "SELECT count(*) AS n FROM ohlcv_1h", &limits);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "n\n216");
}

fn silver_file(d: &Path, date: &str) -> PathBuf {
    d.join(format!(
        "lake/silver/ohlcv_1h/date={date}/part-00000.parquet"
    ))
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

const SILVER_SUMS: &str = "SELECT date, count(*) AS n, round(sum(volume), 6) AS v FROM crypto_analytics.ohlcv_1h GROUP BY date ORDER BY date";
const GOLD_SUMS: &str = "SELECT date, count(*) AS n, round(sum(volume), 6) AS v FROM crypto_gold.ohlcv_1d GROUP BY date ORDER BY date";

fn sums(d: &Path) -> (String, String) {
    let get = |q: &str| {
        let (r, _) = sql(d, q, &[]);
        assert_eq!(r.code, 0, "{q}: {}", r.stderr);
        r.stdout
    };
    (get(SILVER_SUMS), get(GOLD_SUMS))
}

fn check_files(d: &Path) -> Run {
    on_lake(d, &["check", "--files"], &[]).0
}

#[test]
fn the_lake_reads_only_its_own_files_and_repairs_itself_from_bronze() {
    let d = tempfile::tempdir().unwrap();
    small_lake(d.path());
    let clean = sums(d.path());
    assert!(clean.0.lines().count() == 4, "{}", clean.0);
    let r = check_files(d.path());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // A stray copy beside a partition's file, and a folder that is not a date.
    let part = silver_file(d.path(), "2024-03-02");
    let stray = part.with_file_name("part-00001.parquet");
    std::fs::copy(&part, &stray).unwrap();
    let odd = d.path().join("lake/silver/ohlcv_1h/date=notadate");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(&part, odd.join("part-00000.parquet")).unwrap();
    assert_eq!(sums(d.path()), clean, "strays are not read");
    let r = check_files(d.path());
    fails_with(&r, "2 file problem(s)");
    assert!(
        r.stdout
            .contains("stray    silver/ohlcv_1h/date=2024-03-02/part-00001.parquet")
            && r.stdout
                .contains("stray    silver/ohlcv_1h/date=notadate/part-00000.parquet")
            && r.stdout.contains("ignored by queries and builds"),
        "{}",
        r.stdout
    );
    // A rebuild leaves the strays where they are, and still reads none of them.
    ok(
        d.path(),
        &["--lake", &lake_of(d.path()), "silver", "--rebuild"],
    );
    assert_eq!(sums(d.path()), clean);
    std::fs::remove_file(&stray).unwrap();
    std::fs::remove_dir_all(&odd).unwrap();

    // A truncated silver partition: SQL names it, check says what happens, silver repairs it.
    truncate(&silver_file(d.path(), "2024-03-01"));
    let (r, _) = sql(d.path(), SILVER_SUMS, &[]);
    fails_with(&r, "silver/ohlcv_1h/date=2024-03-01/part-00000.parquet");
    let r = check_files(d.path());
    fails_with(&r, "1 file problem(s)");
    assert!(
        r.stdout
            .contains("the next silver build rebuilds 2024-03-01 from bronze"),
        "{}",
        r.stdout
    );
    ok(d.path(), &["--lake", &lake_of(d.path()), "silver"]);
    ok(d.path(), &["--lake", &lake_of(d.path()), "gold"]);
    assert_eq!(sums(d.path()), clean, "repaired from bronze");

    // A deleted silver partition comes back with the next build.
    std::fs::remove_file(silver_file(d.path(), "2024-03-03")).unwrap();
    let r = check_files(d.path());
    assert!(r.stdout.contains("missing "), "{}", r.stdout);
    ok(d.path(), &["--lake", &lake_of(d.path()), "silver"]);
    assert_eq!(sums(d.path()), clean);

    // A truncated gold partition is rebuilt from silver by the next gold build.
    truncate(
        &d.path()
            .join("lake/gold/ohlcv_1d/date=2024-03-02/part-00000.parquet"),
    );
    ok(d.path(), &["--lake", &lake_of(d.path()), "gold"]);
    assert_eq!(sums(d.path()), clean);

    // `silver --rebuild` never needs to read the partition it replaces.
    truncate(&silver_file(d.path(), "2024-03-02"));
    ok(
        d.path(),
        &["--lake", &lake_of(d.path()), "silver", "--rebuild"],
    );
    ok(
        d.path(),
        &["--lake", &lake_of(d.path()), "gold", "--rebuild"],
    );
    assert_eq!(sums(d.path()), clean);
    let r = check_files(d.path());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn credentials_in_a_lake_url_never_reach_the_output() {
    let d = tempfile::tempdir().unwrap();
    let (r, _) = cryptolake_rss(
        d.path(),
        &[
            "--lake",
            "s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY@bucket/x",
            "sql",
            "SELECT 1",
        ],
        &[],
    );
    fails_with(&r, "credentials do not belong in the lake URL");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !all.contains("AKIAIOSFODNN7EXAMPLE") && !all.contains("wJalrXUtnFEMI"),
        "{all}"
    );
}

#[test]
fn catalog_ddl_escapes_every_literal_it_prints() {
    let d = tempfile::tempdir().unwrap();
    let location = "/tmp/x'); COPY (SELECT 1) TO '/tmp/pwn' --";
    for (engine, quoted) in [
        ("duckdb", "/tmp/x''); COPY (SELECT 1) TO ''/tmp/pwn'' --"),
        ("trino", "/tmp/x''); COPY (SELECT 1) TO ''/tmp/pwn'' --"),
        ("athena", "/tmp/x\\'); COPY (SELECT 1) TO \\'/tmp/pwn\\' --"),
        ("spark", "/tmp/x\\'); COPY (SELECT 1) TO \\'/tmp/pwn\\' --"),
    ] {
        let out = ok(
            d.path(),
            &["catalog", "ddl", "--engine", engine, "--location", location],
        );
        assert!(out.contains(quoted), "{engine}:\n{out}");
        assert!(
            !out.contains("x');"),
            "{engine} printed the quote unescaped:\n{out}"
        );
    }
}

/// A daily archive zip holding `csv` as its one member.
fn zip_file(dir: &Path, name: &str, csv: &[u8], zip64: bool) -> PathBuf {
    let path = dir.join(name);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file(
        name.replace(".zip", ".csv"),
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(zip64),
    )
    .unwrap();
    zip.write_all(csv).unwrap();
    zip.finish().unwrap();
    path
}

/// Replaces every little-endian occurrence of `from` in the file with `to`.
fn patch(path: &Path, from: &[u8], to: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(
        found >= 2,
        "the size is in the local and the central header"
    );
    std::fs::write(path, bytes).unwrap();
}

const KLINE: &str =
    "1710374400000,100.0,101.0,99.0,100.5,10.0,1710374459999,1005.0,5,5.0,502.5,0\n";

#[test]
fn hostile_archives_are_refused_within_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let import = |path: &Path| {
        let p = path.display().to_string();
        on_lake(d.path(), &["import", "binance-archive", &p], &[])
    };
    // Refused: exit 1, the one error line, and the file's reason on stdout.
    let refused = |r: &Run, reason: &str| {
        fails_with(r, "1 file(s) could not be imported");
        assert!(r.stdout.contains(reason), "{reason:?} not in\n{}", r.stdout);
    };
    // Bombs: 96 MB of zeros (about 100 KB packed) behind a daily and a monthly name, each
    // holding far less; and a file larger than any day's zip can be.
    let zeros = vec![b'0'; 32 << 20];
    for name in ["BTCUSDT-1m-2024-03-14.zip", "BTCUSDT-1m-2024-03.zip"] {
        let path = d.path().join(name);
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        zip.start_file(
            name.replace(".zip", ".csv"),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true),
        )
        .unwrap();
        for _ in 0..3 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
        let (r, rss) = import(&path);
        refused(&r, "unpacked is larger than");
        bounded(rss, RSS_BOUND);
        std::fs::remove_file(&path).unwrap();
    }
    let path = d.path().join("BTCUSDT-1m-2024-03-14.zip");
    std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
    let (r, _) = import(&path);
    refused(&r, "is 3145728 bytes, more than a file of its period");
    std::fs::remove_file(&path).unwrap();

    // Size headers that lie: 32-bit (4 GB) and zip64 (2^62 bytes) for a one-line CSV.
    let real = (KLINE.len() as u32).to_le_bytes();
    let path = zip_file(
        d.path(),
        "BTCUSDT-1m-2024-03-14.zip",
        KLINE.as_bytes(),
        false,
    );
    patch(&path, &real, &u32::MAX.to_le_bytes());
    let (r, rss) = import(&path);
    assert_ne!(r.code, 134, "aborted:\n{}", r.stderr);
    bounded(rss, RSS_BOUND);
    // The zip's data is what counts: the one line imports (or the file is refused), and
    // nothing is allocated for the size claimed.
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    std::fs::remove_file(&path).unwrap();
    let path = zip_file(
        d.path(),
        "BTCUSDT-1m-2024-03-14.zip",
        KLINE.as_bytes(),
        true,
    );
    patch(
        &path,
        &(KLINE.len() as u64).to_le_bytes(),
        &(1u64 << 62).to_le_bytes(),
    );
    let (r, rss) = import(&path);
    assert_ne!(r.code, 134, "aborted:\n{}", r.stderr);
    bounded(rss, RSS_BOUND);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    std::fs::remove_file(&path).unwrap();

    // Klines dated 0001-01-01 in a file named for 2024-03-14: refused, nothing written.
    let old = KLINE.replacen("1710374400000", "-62135596800000", 1);
    let before = bronze_objects(d.path());
    let path = zip_file(d.path(), "BTCUSDT-1m-2024-03-13.zip", old.as_bytes(), false);
    let (r, _) = import(&path);
    refused(
        &r,
        "holds klines of 0001-01-01, outside the period 2024-03-13",
    );
    assert_eq!(bronze_objects(d.path()), before);
    assert!(!d.path().join("lake/bronze/source=binance/dataset=klines_1m_archive/symbol=BTC-USDT/date=0001-01-01").exists());
}
