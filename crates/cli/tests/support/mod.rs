//! Test support: running the binary, and a real S3-compatible server (SeaweedFS `weed mini`)
//! on loopback. Each test binary uses part of it.
#![allow(dead_code)]

pub mod run;
pub mod seaweed;

#[allow(unused_imports)]
pub use seaweed::*;
