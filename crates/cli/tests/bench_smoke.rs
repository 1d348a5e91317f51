//! The benchmark runner at its small scale: the same bronze through cryptolake, DuckDB, Polars
//! and pandas must give the same silver and gold. (Timings are the runner's business, not a
//! test's.)

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn every_engine_agrees_with_cryptolake_on_the_small_benchmark() {
    let python = support::venv_with(
        &[
            "duckdb==2.0.0",
            "polars==2.1.0",
            "pandas==3.1.1",
            "pyarrow==26.0.1",
        ],
        &|| support::venv_imports("duckdb, polars, pandas, pyarrow"),
    );
    let work = tempfile::tempdir().unwrap();
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/run.py");
    let out = Command::new("python3")
        .arg(runner)
        .args([
            "--symbols",
            "10",
            "--days",
            "7",
            "--runs",
            "1",
            "--incremental",
            // One simulated day, each measured hour built twice: the repeat path (the lake
            // put back from hard links, what it replaces kept aside until the day is measured) runs,
            // at a seventh of the default's cost.
            "--incremental-days",
            "1",
            "--incremental-repeats",
            "2",
            "--cores",
        ])
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_cryptolake"))
        .arg("--python")
        .arg(&python)
        .arg("--work")
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The input has what makes the job non-trivial: duplicate pages and gaps.
    let generated: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("10x7/generated.json")).unwrap(),
    )
    .unwrap();
    assert!(
        generated["duplicate_pages"].as_u64().unwrap() > 0,
        "{generated}"
    );
    assert!(generated["gap_rows"].as_u64().unwrap() > 0, "{generated}");
    for engine in ["duckdb", "polars", "pandas"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| {engine} |")) && l.ends_with("| agrees |")),
            "{engine}: {stdout}"
        );
    }
    // Three tables (ohlcv_1h, ohlcv_1m, ohlcv_1d) for each of the three peers.
    assert_eq!(stdout.matches(": agree").count(), 9, "{stdout}");
    // The cores measurement ran both pinnings, each with its CPU time and the time the host
    // took from the pinned CPUs (steal, from /proc/stat).
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("10x7/results.json")).unwrap(),
    )
    .unwrap();
    let cores = &results["cores"];
    let number = |k: &str| {
        cores[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {cores}"))
    };
    assert!(
        number("one_core_seconds") > 0.0 && number("two_core_seconds") > 0.0,
        "{cores}"
    );
    assert!(number("one_core_cpu_seconds") > 0.0, "{cores}");
    for k in ["one_core_stolen_seconds", "two_core_stolen_seconds"] {
        let stolen = cores[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} in {cores}"));
        assert_eq!(stolen.len(), 1, "{cores}");
        assert!(stolen[0].as_f64().unwrap() >= 0.0, "{cores}");
    }
    assert_eq!(
        stdout.matches("stolen by the hypervisor").count(),
        2,
        "{stdout}"
    );
    // The incremental measurement ran, and each of its builds found the new hour (the runner
    // exits non-zero otherwise).
    assert!(
        stdout.contains("incremental: one hour of new bronze for 10 symbols"),
        "{stdout}"
    );
    assert!(stdout.contains("each hour built 2 times"), "{stdout}");
    // What the repeats replaced was removed once the measurements were taken.
    assert!(!work.path().join("10x7/trash").exists());
}
