//! Pure aggregation of hours into days.

use chrono::NaiveDate;
use cryptolake_model::{DailyCandle, HourlyCandle};

use crate::rollup::Rollup;

/// Aggregates the hours of one exchange and symbol on one date (sorted by open time): open of
/// the first hour, highest high, lowest low, close of the last hour, summed amounts, hours
/// present, and complete when all 24 hours have all 60 minutes. `None` for no hours.
pub fn daily(date: NaiveDate, hours: &[HourlyCandle]) -> Option<DailyCandle> {
    let first = hours.first()?;
    let last = hours.last()?;
    let mut r = Rollup::new();
    for h in hours {
        r.add(h.high, h.low, h.volume, h.quote_volume, h.trade_count);
    }
    let hours_present = hours.len() as i32;
    Some(DailyCandle {
        exchange: first.exchange,
        symbol: first.symbol.clone(),
        date,
        open: first.open,
        high: r.high,
        low: r.low,
        close: last.close,
        volume: r.volume,
        quote_volume: r.quote_volume,
        trade_count: r.trade_count,
        hours_present,
        is_complete: hours_present == 24 && hours.iter().all(HourlyCandle::is_complete),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use cryptolake_model::{Exchange, Symbol, parse_time};
    use proptest::prelude::*;

    fn hour(i: i64, o: f64, c: f64, v: f64, minutes: i32) -> HourlyCandle {
        HourlyCandle {
            exchange: Exchange::Binance,
            symbol: Symbol::parse("ETH-USDT").unwrap(),
            open_time: parse_time("2024-03-01T00:00:00Z").unwrap() + Duration::hours(i),
            open: o,
            high: o.max(c) + 1.0,
            low: o.min(c) / 2.0,
            close: c,
            volume: v,
            quote_volume: Some(v * o),
            trade_count: Some(3),
            minutes_present: minutes,
            minute_mask: (1i64 << minutes) - 1,
            empty_mask: 0,
            ingested_at: parse_time("2024-03-02T00:00:00Z").unwrap(),
        }
    }

    fn d() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
    }

    #[test]
    fn complete_day() {
        let hours: Vec<_> = (0..24)
            .map(|i| hour(i, 10.0 + i as f64, 11.0 + i as f64, 1.0, 60))
            .collect();
        let day = daily(d(), &hours).unwrap();
        assert_eq!((day.open, day.close, day.volume), (10.0, 34.0, 24.0));
        assert_eq!((day.high, day.low), (35.0, 5.0));
        assert_eq!(day.trade_count, Some(72));
        assert!(day.is_complete);
        let mut partial = hours.clone();
        partial[3].minutes_present = 59;
        partial[3].minute_mask = (1i64 << 59) - 1;
        assert!(!daily(d(), &partial).unwrap().is_complete);
        // A missing minute that two fetches confirmed empty is complete data.
        partial[3].empty_mask = 1 << 59;
        assert!(daily(d(), &partial).unwrap().is_complete);
        // A bit for a minute that is present does not stand in for a missing one.
        partial[3].empty_mask = 1;
        assert!(!daily(d(), &partial).unwrap().is_complete);
        assert!(!daily(d(), &hours[1..]).unwrap().is_complete);
        assert_eq!(daily(d(), &hours[1..]).unwrap().hours_present, 23);
        assert!(daily(d(), &[]).is_none());
    }

    proptest! {
        #[test]
        fn day_invariants(spec in proptest::collection::btree_map(0i64..24, (1.0f64..100.0, 1.0f64..100.0, 0.0f64..10.0, 1i32..=60), 1..24)) {
            let hours: Vec<_> = spec.iter().map(|(i, (o, c, v, m))| hour(*i, *o, *c, *v, *m)).collect();
            let day = daily(d(), &hours).unwrap();
            let v: f64 = hours.iter().map(|h| h.volume).sum();
            prop_assert!((day.volume - v).abs() <= 1e-9 * v.max(1.0));
            prop_assert!(day.high >= day.open.max(day.close));
            prop_assert!(day.low <= day.open.min(day.close));
            prop_assert_eq!(day.hours_present as usize, hours.len());
            prop_assert_eq!(day.open, hours[0].open);
            prop_assert_eq!(day.close, hours[hours.len() - 1].close);
        }
    }
}
