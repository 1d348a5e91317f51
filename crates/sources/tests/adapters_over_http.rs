//! Each adapter against the simulated exchange over HTTP, in the exchange's own format.

use chrono::{Duration, Utc};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_sources::http::RetryPolicy;
use cryptolake_sources::kraken::parse::STILL_OPEN;
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};
use cryptolake_sources::{ExchangeClient, Record, parse_page};

fn candles(records: &[Record]) -> Vec<(chrono::DateTime<Utc>, f64, chrono::DateTime<Utc>)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Candle { candle, close_time } => {
                Some((candle.open_time, candle.volume, *close_time))
            }
            Record::Rejected { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn every_adapter_reads_its_format_from_the_simulator() {
    let now = parse_time("2024-03-04T12:00:30Z").unwrap();
    let market = SimMarket::default_market(3);
    let sim = SimServer::start(market.clone(), SimClock::Fixed(now), 0)
        .await
        .unwrap();
    let start = parse_time("2024-03-03T00:00:00Z").unwrap();
    let client =
        |ex| ExchangeClient::new(ex, Some(&sim.base_url()), RetryPolicy::default(), None).unwrap();

    // Binance spot and futures: every minute, its own prices.
    let usdt = Symbol::parse("BTC-USDT").unwrap();
    for ex in [Exchange::Binance, Exchange::BinanceFutures] {
        let page = client(ex)
            .fetch_1m(&usdt, start, start + Duration::minutes(1000))
            .await
            .unwrap();
        let got = candles(&parse_page(ex, &page.body, &usdt).unwrap());
        assert_eq!(got.len(), 1000, "{ex}");
        let expected = market.candle_on(ex, &usdt, start).unwrap();
        assert!((got[0].1 - expected.volume).abs() < 1e-6, "{ex}");
    }

    // Coinbase: 300 minutes asked, only those with trades served, newest first.
    let usd = Symbol::parse("BTC-USD").unwrap();
    let page = client(Exchange::Coinbase)
        .fetch_1m(&usd, start, start + Duration::minutes(300))
        .await
        .unwrap();
    let got = candles(&parse_page(Exchange::Coinbase, &page.body, &usd).unwrap());
    let traded = (0..300)
        .filter(|i| {
            market
                .candle_on(Exchange::Coinbase, &usd, start + Duration::minutes(*i))
                .unwrap()
                .volume
                > 0.0
        })
        .count();
    let in_window: Vec<_> = got.iter().filter(|c| c.0 >= start).collect();
    assert_eq!(in_window.len(), traded);
    assert!(traded < 300, "some minutes have no trades");
    assert!(got.windows(2).all(|w| w[0].0 > w[1].0), "newest first");

    // Kraken: the latest 720 minutes at most, the last row the open candle.
    let page = client(Exchange::Kraken)
        .fetch_1m(&usd, parse_time("2024-03-04T11:30:00Z").unwrap(), now)
        .await
        .unwrap();
    let got = candles(&parse_page(Exchange::Kraken, &page.body, &usd).unwrap());
    assert_eq!(got.len(), 31, "11:30 to 11:59 closed, 12:00 open");
    assert_eq!(got.last().unwrap().2, STILL_OPEN);
    assert_eq!(
        got.last().unwrap().0,
        parse_time("2024-03-04T12:00:00Z").unwrap()
    );
    let page = client(Exchange::Kraken)
        .fetch_1m(&usd, now - Duration::days(2), now)
        .await
        .unwrap();
    let got = candles(&parse_page(Exchange::Kraken, &page.body, &usd).unwrap());
    assert_eq!(got.len(), 720, "never more than 720, whatever since says");

    // An unknown pair is Kraken's error in a 200 body, and a clear failure.
    let err = client(Exchange::Kraken)
        .fetch_1m(
            &Symbol::parse("ABC-USD").unwrap(),
            now - Duration::minutes(5),
            now,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("EQuery:Unknown asset pair"), "{err}");
    let err = client(Exchange::Coinbase)
        .fetch_1m(
            &Symbol::parse("ABC-USD").unwrap(),
            start,
            start + Duration::minutes(5),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") && err.contains("NotFound"), "{err}");
    sim.stop().await;
}
