//! Pure aggregation of minutes into hours: deduplication and the OHLCV rules.

use chrono::{DateTime, Duration, Timelike, Utc};
use cryptolake_model::{Candle, HourlyCandle, hour_start};

use crate::MinuteRow;
use crate::rollup::Rollup;

/// One closed minute with the provenance that decides between duplicates.
#[derive(Debug, Clone)]
pub struct Minute {
    pub candle: Candle,
    /// When the bronze object holding it was fetched.
    pub fetched_at: DateTime<Utc>,
    /// The bronze key, to break ties between objects fetched at the same instant.
    /// Shared by every minute of the object.
    pub source_key: std::sync::Arc<str>,
}

/// A minute with the provenance that decides between duplicates (its candle and fetch time,
/// and the key of its bronze object): a [`Minute`], or a view of one parsed in place.
pub trait Fetched: MinuteRow {
    /// The bronze key, to break ties between objects fetched at the same instant.
    fn source_key(&self) -> &str;
}

impl MinuteRow for Minute {
    fn candle(&self) -> &Candle {
        &self.candle
    }
    fn fetched_at(&self) -> DateTime<Utc> {
        self.fetched_at
    }
}

impl Fetched for Minute {
    fn source_key(&self) -> &str {
        &self.source_key
    }
}

impl<T: Fetched> Fetched for &T {
    fn source_key(&self) -> &str {
        (**self).source_key()
    }
}

/// What deduplication left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Minutes fetched more than once: all but the latest copy.
    pub total: usize,
    /// Of those, copies whose values differ from the kept one: the exchange revised the candle.
    pub conflicting: usize,
}

/// Keeps one minute per open time: the one fetched last (ties broken by key). The result is
/// sorted by open time and does not depend on the input order.
///
/// Works on minutes or on references to them (cheaper to move while sorting).
pub fn dedup_latest<M: Fetched>(mut minutes: Vec<M>) -> (Vec<M>, Dropped) {
    minutes.sort_by(|a, b| {
        (a.candle().open_time, a.fetched_at(), a.source_key()).cmp(&(
            b.candle().open_time,
            b.fetched_at(),
            b.source_key(),
        ))
    });
    let before = minutes.len();
    let mut out: Vec<M> = Vec::with_capacity(before);
    let mut conflicting = 0;
    for m in minutes {
        match out.last_mut() {
            Some(last) if last.candle().open_time == m.candle().open_time => {
                if last.candle() != m.candle() {
                    conflicting += 1;
                }
                *last = m
            }
            _ => out.push(m),
        }
    }
    let dropped = Dropped {
        total: before - out.len(),
        conflicting,
    };
    (out, dropped)
}

/// Aggregates the minutes of one exchange and symbol (sorted by open time, unique) into hours:
/// open of the first minute, highest high, lowest low, close of the last minute, summed amounts
/// (an amount is null for the hour if any minute lacks it), and the count of minutes present.
/// `is_final(hour_start)` decides which hours may be emitted at all.
pub fn hourly<M: MinuteRow>(
    minutes: &[M],
    is_final: impl Fn(DateTime<Utc>) -> bool,
) -> Vec<HourlyCandle> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < minutes.len() {
        let hour = hour_start(minutes[i].candle().open_time);
        let end = hour + Duration::hours(1);
        let mut j = i;
        while j < minutes.len() && minutes[j].candle().open_time < end {
            j += 1;
        }
        if is_final(hour) {
            out.push(one_hour(hour, &minutes[i..j]));
        }
        i = j;
    }
    out
}

/// The hours that `ohlcv_1m` rows of one exchange and symbol (sorted by open time, unique)
/// make, aggregated as a build aggregates them: what `ohlcv_1h` must hold for them.
pub fn hours_of_rows<'a>(
    rows: impl IntoIterator<Item = &'a cryptolake_model::MinuteCandle>,
) -> Vec<HourlyCandle> {
    let rows: Vec<&cryptolake_model::MinuteCandle> = rows.into_iter().collect();
    hourly(&rows, |_| true)
}

fn one_hour<M: MinuteRow>(hour: DateTime<Utc>, group: &[M]) -> HourlyCandle {
    let first = group[0].candle();
    let last = group[group.len() - 1].candle();
    let mut r = Rollup::new();
    let mut ingested_at = group[0].fetched_at();
    let mut minute_mask = 0i64;
    for m in group {
        let c = m.candle();
        r.add(c.high, c.low, c.volume, c.quote_volume, c.trade_count);
        ingested_at = ingested_at.max(m.fetched_at());
        // Every minute of the group lies in `hour`: its minute of the hour is its offset.
        minute_mask |= 1 << c.open_time.minute();
    }
    HourlyCandle {
        exchange: first.exchange,
        symbol: first.symbol.clone(),
        open_time: hour,
        open: first.open,
        high: r.high,
        low: r.low,
        close: last.close,
        volume: r.volume,
        quote_volume: r.quote_volume,
        trade_count: r.trade_count,
        minutes_present: group.len() as i32,
        minute_mask,
        empty_mask: 0,
        ingested_at,
    }
}

/// The minutes of `hour` that no fetch had a candle for (not in `minute_mask`) although at
/// least two fetches asked for them after they closed: confirmed empty, as the gap report
/// calls them. `fetches` are the windows `[start, end)` and fetch times of the group's bronze
/// objects.
pub fn confirmed_empty(
    hour: DateTime<Utc>,
    minute_mask: i64,
    fetches: &[(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)],
) -> i64 {
    let mut mask = 0i64;
    for m in 0..60 {
        if minute_mask & (1 << m) != 0 {
            continue;
        }
        let t = hour + Duration::minutes(m);
        let end = t + Duration::minutes(1);
        let asked = fetches
            .iter()
            .filter(|(s, e, fetched)| *s <= t && t < *e && *fetched >= end)
            .take(2)
            .count();
        if asked >= 2 {
            mask |= 1 << m;
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::{Exchange, Symbol, parse_time};
    use proptest::prelude::*;

    fn minute(i: i64, o: f64, c: f64, spread: f64, v: f64, fetched: i64) -> Minute {
        let t = parse_time("2024-03-01T00:00:00Z").unwrap() + Duration::minutes(i);
        Minute {
            candle: Candle::new(
                Exchange::Binance,
                Symbol::parse("BTC-USDT").unwrap(),
                t,
                o,
                o.max(c) + spread,
                o.min(c) - spread.min(o.min(c) / 2.0),
                c,
                v,
                Some(v * o),
                Some((v * 10.0) as i64),
            )
            .unwrap(),
            fetched_at: parse_time("2024-03-02T00:00:00Z").unwrap() + Duration::seconds(fetched),
            source_key: format!("k{fetched}").into(),
        }
    }

    #[test]
    fn hour_rules() {
        let mins = vec![
            minute(0, 10.0, 11.0, 1.0, 1.0, 0),
            minute(1, 11.0, 9.0, 0.5, 2.0, 0),
            minute(59, 9.0, 12.0, 0.0, 3.0, 0),
            minute(60, 12.0, 12.5, 0.0, 4.0, 0),
        ];
        let hours = hourly(&mins, |_| true);
        assert_eq!(hours.len(), 2);
        let h = &hours[0];
        assert_eq!((h.open, h.close, h.high, h.low), (10.0, 12.0, 12.0, 8.5));
        assert_eq!((h.volume, h.minutes_present), (6.0, 3));
        assert_eq!(hours[1].open_time.to_rfc3339(), "2024-03-01T01:00:00+00:00");
        assert_eq!(hourly(&mins, |h| h.timestamp() % 7200 == 0).len(), 1);
    }

    #[test]
    fn latest_fetch_wins() {
        let (kept, dropped) = dedup_latest(vec![
            minute(5, 1.0, 1.0, 0.0, 9.0, 20),
            minute(5, 1.0, 1.0, 0.0, 1.0, 10),
            minute(4, 1.0, 1.0, 0.0, 1.0, 10),
            minute(4, 1.0, 1.0, 0.0, 1.0, 11),
        ]);
        // Minute 5 was revised (volume 1 -> 9); minute 4 was fetched twice, identical.
        assert_eq!(
            dropped,
            Dropped {
                total: 2,
                conflicting: 1
            }
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].candle.volume, 9.0);
    }

    fn arb_minutes() -> impl Strategy<Value = Vec<Minute>> {
        proptest::collection::vec(
            (
                0i64..300,
                1.0f64..1000.0,
                1.0f64..1000.0,
                0.0f64..5.0,
                0.0f64..50.0,
                0i64..5,
            ),
            1..200,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(i, o, c, s, vol, f)| minute(i, o, c, s, vol, f))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn hourly_invariants(input in arb_minutes()) {
            let mut shuffled = input.clone();
            shuffled.reverse();
            let (mins, dropped) = dedup_latest(input.clone());
            let (again, _) = dedup_latest(shuffled);
            // Order of arrival does not change the outcome.
            prop_assert_eq!(
                mins.iter().map(|m| (m.candle.open_time, m.source_key.clone())).collect::<Vec<_>>(),
                again.iter().map(|m| (m.candle.open_time, m.source_key.clone())).collect::<Vec<_>>()
            );
            prop_assert_eq!(mins.len() + dropped.total, input.len());
            prop_assert!(dropped.conflicting <= dropped.total);
            let hours = hourly(&mins, |_| true);
            let total: i32 = hours.iter().map(|h| h.minutes_present).sum();
            prop_assert_eq!(total as usize, mins.len());
            let v_min: f64 = mins.iter().map(|m| m.candle.volume).sum();
            let v_hour: f64 = hours.iter().map(|h| h.volume).sum();
            prop_assert!((v_min - v_hour).abs() <= 1e-9 * v_min.max(1.0));
            for h in &hours {
                prop_assert!(h.high >= h.open.max(h.close));
                prop_assert!(h.low <= h.open.min(h.close));
                prop_assert!(h.low <= h.high);
                prop_assert!((1..=60).contains(&h.minutes_present));
                // The mask names exactly the minutes that made the hour.
                prop_assert_eq!(h.minute_mask.count_ones() as i32, h.minutes_present);
                for m in mins.iter().filter(|m| hour_start(m.candle.open_time) == h.open_time) {
                    let bit = (m.candle.open_time - h.open_time).num_minutes();
                    prop_assert!(h.minute_mask & (1 << bit) != 0);
                }
                prop_assert_eq!(h.open_time, hour_start(h.open_time));
            }
        }
    }
}
