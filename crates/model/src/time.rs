use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};

use crate::Error;

pub const MICROS_PER_MINUTE: i64 = 60_000_000;

/// The earliest and latest instants a time given on the command line may name: the Unix epoch
/// (no market data is older) and the end of year 9999 (so that every window, lookback and
/// key computed from it stays in range).
pub const EARLIEST: &str = "1970-01-01T00:00:00Z";
pub const LATEST: &str = "9999-12-31T23:59:59Z";

/// Parses an RFC 3339 timestamp or a plain date (midnight UTC), from 1970 through 9999.
pub fn parse_time(input: &str) -> Result<DateTime<Utc>, Error> {
    let s = input.trim();
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        day_start(d)
    } else {
        return Err(Error::InvalidTime {
            input: input.to_string(),
        });
    };
    let bound = |b: &str| DateTime::parse_from_rfc3339(b).map(|t| t.with_timezone(&Utc));
    match (bound(EARLIEST), bound(LATEST)) {
        (Ok(lo), Ok(hi)) if t >= lo && t <= hi => Ok(t),
        _ => Err(Error::TimeOutOfRange {
            input: input.to_string(),
        }),
    }
}

pub fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

#[inline]
pub fn date_of(t: DateTime<Utc>) -> NaiveDate {
    // The UTC date as stored: `date_naive` adds the zero offset first, with a division.
    t.naive_utc().date()
}

#[inline]
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    // The date stays and the time is cut to its hour: no conversion through a day number,
    // which costs more than everything else here and runs for every minute of a build.
    let naive = t.naive_utc();
    let hour = chrono::NaiveTime::from_hms_opt(naive.hour(), 0, 0).expect("an hour of a day");
    DateTime::from_naive_utc_and_offset(naive.date().and_time(hour), Utc)
}

#[inline]
pub fn minute_aligned(t: DateTime<Utc>) -> bool {
    // On the stored UTC time, as `date_of`: `Timelike` on the `DateTime` adds the zero offset
    // first, with a division, for every candle parsed.
    let naive = t.naive_utc();
    naive.second() == 0 && naive.nanosecond() == 0
}

/// `20240102T030405.678Z`: sortable and safe in object keys.
pub fn format_compact(t: DateTime<Utc>) -> String {
    // Every key is built with this, thousands per plan: written out directly, with chrono's
    // formatter for what the direct form does not cover (years outside 0..=9999, leap seconds).
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    }
    format!(
        "{year:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        nanos / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text parses to a time from 1970 through 9999 or to an error; never a panic.
        #[test]
        fn time_flags_never_panic_and_stay_in_range(
            text in "\\PC{0,40}",
            year in -300_000i64..300_000,
            rest in "(-[0-9]{1,3}-[0-9]{1,3}(T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(Z|[+-][0-9]{2}:[0-9]{2}))?)?",
        ) {
            let _ = parse_time(&text);
            if let Ok(t) = parse_time(&format!("{year:04}{rest}")) {
                proptest::prop_assert!((1970..=9999).contains(&t.year()));
            }
        }

        /// The direct form of compact times is what chrono's formatter writes.
        #[test]
        fn compact_times_format_as_chrono_does(
            secs in -80_000_000_000i64..300_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            proptest::prop_assert_eq!(format_compact(t), t.format("%Y%m%dT%H%M%S%.3fZ").to_string());
        }

        /// The start of an instant's hour is its epoch seconds rounded down to a multiple of
        /// 3,600, before 1970 too.
        #[test]
        fn hour_start_rounds_epoch_seconds_down(
            secs in -80_000_000_000i64..300_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let h = hour_start(t);
            proptest::prop_assert_eq!(h.timestamp(), secs.div_euclid(3600) * 3600);
            proptest::prop_assert_eq!(h.timestamp_subsec_nanos(), 0);
        }
    }

    #[test]
    fn parses_dates_and_timestamps_as_utc() {
        assert_eq!(
            parse_time("2024-01-02").unwrap().to_rfc3339(),
            "2024-01-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05+02:00")
                .unwrap()
                .to_rfc3339(),
            "2024-01-02T01:04:05+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn compact_format_sorts_like_time() {
        let a = parse_time("2024-01-02T03:04:05Z").unwrap();
        let b = parse_time("2024-01-10T00:00:00Z").unwrap();
        assert!(format_compact(a) < format_compact(b));
        assert_eq!(format_compact(a), "20240102T030405.000Z");
    }
}
