//! Candles at every interval from the stored tables: which table builds each interval, how its
//! buckets are aligned (UTC; weeks from Monday 00:00, months from the 1st, as Binance aligns
//! them), and how complete each bar is.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use cryptolake_model::{HourlyCandle, MinuteCandle, hour_start};
use serde::Serialize;

use super::rows::CandleRow;

/// The width of a candle: every interval the API and the chart serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    Mo1,
}

/// The stored table an interval's bars are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `ohlcv_1m`, with `ohlcv_1h` for the minutes confirmed empty.
    Minutes,
    /// `ohlcv_1h`: its rows carry the minutes present and confirmed empty.
    Hours,
}

impl Interval {
    pub const ALL: [Interval; 15] = [
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    /// The name the API, the chart and the exports use (Binance's).
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1M",
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        Interval::ALL.map(Interval::as_str).join(", ")
    }

    /// The length of a fixed interval in minutes; `None` for months.
    fn fixed_minutes(self) -> Option<i64> {
        Some(match self {
            Interval::M1 => 1,
            Interval::M3 => 3,
            Interval::M5 => 5,
            Interval::M15 => 15,
            Interval::M30 => 30,
            Interval::H1 => 60,
            Interval::H2 => 120,
            Interval::H4 => 240,
            Interval::H6 => 360,
            Interval::H8 => 480,
            Interval::H12 => 720,
            Interval::D1 => 1440,
            Interval::D3 => 3 * 1440,
            Interval::W1 => 7 * 1440,
            Interval::Mo1 => return None,
        })
    }

    /// A length to step back by when only an end and a count are given (a month: 31 days).
    pub fn nominal(self) -> Duration {
        Duration::minutes(self.fixed_minutes().unwrap_or(31 * 1440))
    }

    /// The stored table that builds it: minutes below an hour, hours from an hour up (so that
    /// every bar counts its minutes).
    pub fn source(self) -> Source {
        match self.fixed_minutes() {
            Some(m) if m < 60 => Source::Minutes,
            _ => Source::Hours,
        }
    }

    /// The start of the bucket holding `t`: multiples of the length since the Unix epoch,
    /// except weeks (from Monday 00:00 UTC) and months (from the 1st, 00:00 UTC).
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Interval::Mo1 => Utc
                .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .single()
                .expect("the first of a month exists"),
            Interval::W1 => {
                let monday =
                    t.date_naive() - Duration::days(i64::from(t.weekday().num_days_from_monday()));
                day(monday)
            }
            _ => {
                let len = self.fixed_minutes().expect("fixed") * 60;
                let secs = t.timestamp().div_euclid(len) * len;
                DateTime::from_timestamp(secs, 0).expect("in range")
            }
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self.fixed_minutes() {
            Some(m) => start + Duration::minutes(m),
            None => {
                let (y, m) = match start.month() {
                    12 => (start.year() + 1, 1),
                    m => (start.year(), m + 1),
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .expect("the first of a month exists")
            }
        }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn day(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// One stored row as a bar is built from it.
struct Unit {
    time: DateTime<Utc>,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    present: i32,
    covered: i32,
}

/// Builds the bars of `interval` from units in time order; `extra_covered(start, end)` adds
/// the minutes of `[start, end)` confirmed empty that no unit carries.
fn build(
    interval: Interval,
    units: impl Iterator<Item = Unit>,
    extra_covered: impl Fn(DateTime<Utc>, DateTime<Utc>) -> i32,
) -> Vec<CandleRow> {
    let mut out: Vec<CandleRow> = Vec::new();
    let mut open_bar: Option<(CandleRow, i32)> = None;
    let finish = |(mut bar, covered): (CandleRow, i32), out: &mut Vec<CandleRow>| {
        let end = interval.next(bar.time);
        let covered = covered + extra_covered(bar.time, end);
        bar.complete = i64::from(covered) >= bar.minutes;
        out.push(bar);
    };
    for u in units {
        let start = interval.start_of(u.time);
        match &mut open_bar {
            Some((bar, covered)) if bar.time == start => {
                bar.high = bar.high.max(u.high);
                bar.low = bar.low.min(u.low);
                bar.close = u.close;
                bar.volume += u.volume;
                bar.minutes_present += u.present;
                *covered += u.covered;
            }
            _ => {
                if let Some(done) = open_bar.take() {
                    finish(done, &mut out);
                }
                let bar = CandleRow {
                    time: start,
                    open: u.open,
                    high: u.high,
                    low: u.low,
                    close: u.close,
                    volume: u.volume,
                    minutes_present: u.present,
                    minutes: (interval.next(start) - start).num_minutes(),
                    complete: false,
                };
                open_bar = Some((bar, u.covered));
            }
        }
    }
    if let Some(done) = open_bar {
        finish(done, &mut out);
    }
    out
}

/// Bars from minutes (in time order, one exchange and symbol) and the hours holding them,
/// whose masks say which missing minutes are confirmed empty.
pub(super) fn from_minutes(
    interval: Interval,
    minutes: &[&MinuteCandle],
    hours: &[&HourlyCandle],
) -> Vec<CandleRow> {
    let units = minutes.iter().map(|m| {
        let c = &m.candle;
        Unit {
            time: c.open_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            present: 1,
            covered: 1,
        }
    });
    let empty = |start: DateTime<Utc>, end: DateTime<Utc>| {
        // Buckets under an hour lie inside one hour.
        let hour = hour_start(start);
        let Ok(i) = hours.binary_search_by(|h| h.open_time.cmp(&hour)) else {
            return 0;
        };
        let h = hours[i];
        let first = (start - hour).num_minutes();
        let len = (end - start).num_minutes();
        let bits = ((h.empty_mask & !h.minute_mask) >> first) & ((1i64 << len) - 1);
        bits.count_ones() as i32
    };
    build(interval, units, empty)
}

/// Bars from hours (in time order, one exchange and symbol).
pub(super) fn from_hours(interval: Interval, hours: &[&HourlyCandle]) -> Vec<CandleRow> {
    let units = hours.iter().map(|h| Unit {
        time: h.open_time,
        open: h.open,
        high: h.high,
        low: h.low,
        close: h.close,
        volume: h.volume,
        present: h.minutes_present,
        covered: h.minutes_covered(),
    });
    build(interval, units, |_, _| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn buckets_are_aligned_as_binance_aligns_them() {
        let x = t("2024-03-06T17:43:00Z"); // a Wednesday
        let cases = [
            (Interval::M1, "2024-03-06T17:43:00Z", "2024-03-06T17:44:00Z"),
            (Interval::M3, "2024-03-06T17:42:00Z", "2024-03-06T17:45:00Z"),
            (
                Interval::M15,
                "2024-03-06T17:30:00Z",
                "2024-03-06T17:45:00Z",
            ),
            (Interval::H4, "2024-03-06T16:00:00Z", "2024-03-06T20:00:00Z"),
            (Interval::H8, "2024-03-06T16:00:00Z", "2024-03-07T00:00:00Z"),
            (
                Interval::H12,
                "2024-03-06T12:00:00Z",
                "2024-03-07T00:00:00Z",
            ),
            (Interval::D1, "2024-03-06T00:00:00Z", "2024-03-07T00:00:00Z"),
            // 3d from the epoch: 19,788 days to 2024-03-06 is a multiple of 3.
            (Interval::D3, "2024-03-06T00:00:00Z", "2024-03-09T00:00:00Z"),
            (Interval::W1, "2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z"),
            (
                Interval::Mo1,
                "2024-03-01T00:00:00Z",
                "2024-04-01T00:00:00Z",
            ),
        ];
        for (i, start, next) in cases {
            assert_eq!(i.start_of(x), t(start), "{i}");
            assert_eq!(i.next(i.start_of(x)), t(next), "{i}");
        }
        assert_eq!(
            Interval::Mo1.next(t("2024-12-01T00:00:00Z")),
            t("2025-01-01T00:00:00Z")
        );
        for i in Interval::ALL {
            assert_eq!(Interval::parse(i.as_str()), Some(i));
        }
        assert_eq!(Interval::parse("1mo"), None);
    }
}
