//! `catalog register --glue` against moto in server mode, the only offline stand-in for the
//! Glue API (a stand-in: it checks the calls and what they store, not AWS's own validation).
//! Built only with `--features glue`, which `.ci/test` turns on for the whole workspace.
#![cfg(feature = "glue")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::run::*;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let python = support::venv_with(&["moto[server]==5.2.5"], &|| {
        support::venv_imports("moto.server, flask, boto3")
    });
    let port = support::free_ports(1)[0];
    let child = Command::new(python.parent().unwrap().join("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, endpoint }
}

#[test]
fn register_creates_then_updates_the_glue_catalog() {
    let m = moto();
    let d = tempfile::tempdir().unwrap();
    let lake = d.path().join("lake").display().to_string();
    // Throwaway values made at run time: moto accepts any.
    let envs: Vec<(String, String)> = vec![
        ("AWS_ACCESS_KEY_ID".into(), support::random_hex(20)),
        ("AWS_SECRET_ACCESS_KEY".into(), support::random_hex(40)),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let args = [
        "--lake",
        &lake,
        "catalog",
        "register",
        "--glue",
        "--location",
        "s3://example-bucket/lake",
        "--first-day",
        "2024-01-01",
        "--endpoint",
        &m.endpoint,
    ];
    let first = ok_with(d.path(), &args, &envs);
    assert!(
        first.contains("database crypto_analytics: created"),
        "{first}"
    );
    assert!(
        first.contains("table crypto_gold.ohlcv_1d: created"),
        "{first}"
    );
    let second = ok_with(d.path(), &args, &envs);
    assert!(second.contains("database crypto_gold: exists"), "{second}");
    assert!(
        second.contains("table crypto_analytics.ohlcv_1h: updated"),
        "{second}"
    );

    // What Glue now holds equals the generated Athena DDL.
    let ddl = ok(
        d.path(),
        &[
            "--lake",
            &lake,
            "catalog",
            "ddl",
            "--engine",
            "athena",
            "--location",
            "s3://example-bucket/lake",
            "--first-day",
            "2024-01-01",
        ],
    );
    let script = r#"
import boto3, json, sys
g = boto3.client("glue", endpoint_url=sys.argv[1], region_name="us-east-1")
out = {}
for db, t in (("crypto_analytics", "ohlcv_1h"), ("crypto_gold", "ohlcv_1d")):
    tab = g.get_table(DatabaseName=db, Name=t)["Table"]
    sd = tab["StorageDescriptor"]
    out[t] = {
        "columns": [[c["Name"], c["Type"]] for c in sd["Columns"]] + [[k["Name"], k["Type"]] for k in tab["PartitionKeys"]],
        "location": sd["Location"],
        "range": tab["Parameters"]["projection.date.range"],
        "template": tab["Parameters"]["storage.location.template"],
    }
print(json.dumps(out))
"#;
    let out = Command::new(support::venv_python())
        .args(["-c", script, &m.endpoint])
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let glue: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for table in ["ohlcv_1h", "ohlcv_1d"] {
        let declared: Vec<(String, String)> =
            cryptolake_pipeline::query::ddl::athena_columns(&ddl, table);
        let stored: Vec<(String, String)> = glue[table]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c[0].as_str().unwrap().to_string(),
                    c[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(stored, declared, "{table}");
        assert_eq!(glue[table]["range"], "2024-01-01,NOW");
    }
    assert_eq!(
        glue["ohlcv_1h"]["location"],
        "s3://example-bucket/lake/silver/ohlcv_1h/"
    );
    assert_eq!(
        glue["ohlcv_1d"]["template"],
        "s3://example-bucket/lake/gold/ohlcv_1d/date=${date}/"
    );
}

#[test]
fn register_refuses_a_local_location_and_names_the_endpoint_failure() {
    let d = tempfile::tempdir().unwrap();
    let lake = d.path().join("lake").display().to_string();
    let r = cryptolake(
        d.path(),
        &["--lake", &lake, "catalog", "register", "--glue"],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("must point at S3"), "{}", r.stderr);
}
