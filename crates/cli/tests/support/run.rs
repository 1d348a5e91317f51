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

/// Starts the binary (a long-running command) and waits up to 60 s for the stdout line that
/// starts with `prefix`: the child, and the rest of that line. A child that ends or stays
/// silent fails the test with its stderr.
pub fn spawn_announcing(
    dir: &Path,
    args: &[&str],
    envs: &[(String, String)],
    prefix: &'static str,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command(dir, args, envs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(rest) => (child, rest),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("the child is reaped");
            panic!(
                "{args:?} did not print a line starting {prefix:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
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

/// Runs the binary and returns what it did with its peak resident memory in bytes, read from
/// the child's own rusage (`wait4`), so other processes of the test do not count.
// The child is reaped by wait4 below, which std does not know about.
#[allow(clippy::zombie_processes)]
pub fn cryptolake_rss(dir: &Path, args: &[&str], envs: &[(String, String)]) -> (Run, u64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command(dir, args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value, and wait4 writes only into the two locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 on the child");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let run = Run {
        code,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    // Linux reports ru_maxrss in KiB.
    (run, usage.ru_maxrss as u64 * 1024)
}

/// The lines of `text` that start with `error:`.
pub fn error_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("error:")).collect()
}

/// A lake at `dir/lake` from the benchmark's generator (`symbols` x `days` from `from`), with
/// silver and gold built.
pub fn generated_lake(dir: &Path, symbols: u32, days: u32, from: &str) {
    let lake = dir.join("lake").display().to_string();
    let (symbols, days) = (symbols.to_string(), days.to_string());
    for args in [
        vec![
            "bench",
            "generate",
            "--symbols",
            &symbols,
            "--days",
            &days,
            "--from",
            from,
        ],
        vec!["silver"],
        vec!["gold"],
    ] {
        let mut all = vec!["--lake", lake.as_str()];
        all.extend(args);
        ok(dir, &all);
    }
}
