//! Domain types of cryptolake.
//!
//! Everything here validates itself on construction: a [`Symbol`] is always a plain `BASE-QUOTE`
//! pair, a [`Candle`] always satisfies the OHLC invariants. Arrow schemas of the lake tables live in
//! [`schema`] so that writers, readers and DDL share one definition.

mod candle;
pub mod clock;
mod error;
mod exchange;
mod funding;
mod run;
pub mod schema;
mod symbol;
mod time;

pub use candle::{Candle, DailyCandle, HourlyCandle, MinuteCandle};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, system_clock};
pub use error::{CandleRule, Error, Result};
pub use exchange::Exchange;
pub use funding::{FundingRate, MAX_ABS_RATE};
pub use run::{Outcome, Step};
pub use symbol::Symbol;
pub use time::{
    MICROS_PER_MINUTE, date_of, day_start, format_compact, hour_start, minute_aligned, parse_time,
};

/// `text` with the user and password of every URL in it (`scheme://user:secret@host`)
/// replaced by `***`: for every message that may echo a URL someone typed.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let local = head.ends_with("file://");
        // A secret may hold `/`, so the credentials run to the last `@` of the word that
        // follows a `user:` (over-redacting a rare path is the safe mistake).
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let word = &tail[..end];
        match word.rfind('@') {
            Some(at) if !local && word[..at].contains(':') => {
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn credentials_in_urls_are_replaced() {
        assert_eq!(
            redact("bad --lake s3://AKIAEXAMPLE:se/cr@t@bucket/x: no"),
            "bad --lake s3://***@bucket/x: no",
            "a secret may hold slashes and @"
        );
        assert_eq!(
            redact("lake \"s3://AKIAEXAMPLE:secret@bucket/x\" and http://u:p@h:1/y"),
            "lake \"s3://***@bucket/x\" and http://***@h:1/y"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("file:///tmp/a@b"), "file:///tmp/a@b");
    }
}
