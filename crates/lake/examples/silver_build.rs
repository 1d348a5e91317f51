//! A silver build of a lake, alone (no quality checks), with the gap report after each batch
//! as the hourly job runs it: what `perf` profiles when the build's own cost is in question.
//! `cargo run --release -p cryptolake-lake --example silver_build -- LAKE [NOW]` (remove
//! `silver/` and `_state/silver` first for a first build; NOW, RFC 3339, is the build's clock,
//! as `--clock-at` gives it).

use std::sync::Arc;
use std::time::Instant;

use cryptolake_lake::Lake;
use cryptolake_lake::silver::SilverBuild;
use cryptolake_model::clock::{ManualClock, SharedClock, system_clock};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: silver_build LAKE [NOW]");
    let clock: SharedClock = match args.next() {
        Some(at) => Arc::new(ManualClock::new(
            cryptolake_model::parse_time(&at).expect("NOW is RFC 3339"),
        )),
        None => system_clock(),
    };
    let now = clock.now();
    let lake = Lake::open(&url).expect("lake opens");
    let started = Instant::now();
    let build = SilverBuild::new().with_concurrency(8).with_clock(clock);
    let plan = build.plan(&lake).await.expect("plan");
    let planned = started.elapsed();
    let mut gaps = std::time::Duration::ZERO;
    let m = build
        .execute_with(&lake, plan, None, async |batch| {
            let at = Instant::now();
            cryptolake_lake::gaps::update(
                &lake,
                batch.touched,
                &batch.listed,
                now,
                batch.complete_listing,
            )
            .await
            .expect("gap report");
            gaps += at.elapsed();
        })
        .await
        .expect("build");
    println!(
        "{} objects, {} candles, {} dates in {:.2} s (planned in {:.1} ms, gap report {:.1} ms)",
        m.objects_read,
        m.candles_read,
        m.changed_dates.len(),
        started.elapsed().as_secs_f64(),
        planned.as_secs_f64() * 1e3,
        gaps.as_secs_f64() * 1e3,
    );
}
