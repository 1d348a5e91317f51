//! Test support: running the binary, and a real S3-compatible server (SeaweedFS `weed mini`)
//! on loopback. Each test binary uses part of it.
#![allow(dead_code)]

pub mod run;
pub mod seaweed;

#[allow(unused_imports)]
pub use seaweed::*;

/// The program `name`, or a failure that says how to install it.
#[allow(dead_code)]
pub fn tool(name: &str, apt_package: &str) -> std::process::Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(
        found,
        "{name} is not installed: `bash .ci/test` installs everything the tests need, or `sudo apt-get install {apt_package}`"
    );
    std::process::Command::new(name)
}
