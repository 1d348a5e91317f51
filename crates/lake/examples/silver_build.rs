//! A first silver build of a lake, alone (no gap report, no quality checks): what `perf`
//! profiles when the build's own cost is in question. `cargo run --release -p
//! cryptolake-lake --example silver_build -- LAKE` (remove `silver/` and `_state/silver`
//! first for a first build).

use cryptolake_lake::Lake;
use cryptolake_lake::silver::SilverBuild;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("usage: silver_build LAKE");
    let lake = Lake::open(&url).expect("lake opens");
    let started = std::time::Instant::now();
    let build = SilverBuild::new().with_concurrency(8);
    let plan = build.plan(&lake).await.expect("plan");
    let m = build.execute(&lake, plan, None).await.expect("build");
    println!(
        "{} objects, {} candles, {} dates in {:.2} s",
        m.objects_read,
        m.candles_read,
        m.changed_dates.len(),
        started.elapsed().as_secs_f64()
    );
}
