//! Running the `cryptolake` binary from tests.

use std::path::Path;
use std::process::Output;

use chrono::{DateTime, Utc};
use cryptolake_model::parse_time;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary with a clean environment: no CRYPTOLAKE_ or AWS_ variables but `envs`.
pub fn command(dir: &Path, args: &[&str], envs: &[(String, String)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cryptolake"));
    cmd.current_dir(dir)
        .args(args)
        .env("CRYPTOLAKE_LOG", "warn");
    for (k, _) in std::env::vars() {
        if (k.starts_with("CRYPTOLAKE_") && k != "CRYPTOLAKE_LOG") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd
}

pub fn cryptolake(dir: &Path, args: &[&str]) -> Run {
    cryptolake_with(dir, args, &[])
}

pub fn cryptolake_with(dir: &Path, args: &[&str], envs: &[(String, String)]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir, args, envs).output().expect("binary runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    ok_with(dir, args, &[])
}

pub fn ok_with(dir: &Path, args: &[&str], envs: &[(String, String)]) -> String {
    let r = cryptolake_with(dir, args, envs);
    assert_eq!(
        r.code, 0,
        "cryptolake {args:?} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

pub fn t(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}
