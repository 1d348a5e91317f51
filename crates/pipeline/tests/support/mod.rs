//! A pipeline over a temporary local lake, its exchanges pointed at the simulated one.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, ManualClock, Symbol, parse_time};
use cryptolake_pipeline::{Options, Pipeline, Settings};
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};

pub fn t(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

/// The simulated market (seed `seed`) frozen at 2024-03-04T14:10, every exchange pointed at
/// it with one symbol (BTC-USDT on Binance and the perpetual markets, BTC-USD elsewhere), only `enabled` enabled, a
/// three-hour lookback, and the pipeline's clock standing at `now`.
#[allow(dead_code)]
pub async fn on_sim(
    seed: u64,
    enabled: &[Exchange],
    now: &str,
) -> (tempfile::TempDir, SimServer, Pipeline) {
    on_market(
        SimMarket::default_market(seed),
        "2024-03-04T14:10:00Z",
        enabled,
        now,
    )
    .await
}

/// [`on_sim`] over `market`, the simulated exchange's clock frozen at `sim_now`.
#[allow(dead_code)]
pub async fn on_market(
    market: SimMarket,
    sim_now: &str,
    enabled: &[Exchange],
    now: &str,
) -> (tempfile::TempDir, SimServer, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimServer::start(market, SimClock::Fixed(t(sim_now)), 0)
        .await
        .unwrap();
    let mut settings = Settings {
        lake: cryptolake_lake::LakeLocation::Local(dir.path().join("lake")),
        ..Settings::default()
    };
    settings.ingest.lookback = Duration::hours(3);
    for (exchange, s) in settings.exchanges.iter_mut() {
        s.base_url = sim.base_url();
        s.enabled = enabled.contains(exchange);
        s.symbols = match exchange {
            Exchange::Binance
            | Exchange::BinanceFutures
            | Exchange::OkxSwap
            | Exchange::BybitLinear => vec![Symbol::parse("BTC-USDT").unwrap()],
            _ => vec![Symbol::parse("BTC-USD").unwrap()],
        };
    }
    let pipeline = Pipeline::open(
        settings,
        Options {
            clock: Arc::new(ManualClock::new(t(now))),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    (dir, sim, pipeline)
}
