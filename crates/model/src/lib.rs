//! Domain types of cryptolake.
//!
//! Everything here validates itself on construction: a [`Symbol`] is always a plain `BASE-QUOTE`
//! pair, a [`Candle`] always satisfies the OHLC invariants. Arrow schemas of the lake tables live in
//! [`schema`] so that writers, readers and DDL share one definition.

mod candle;
pub mod clock;
mod error;
mod exchange;
pub mod schema;
mod symbol;
mod time;

pub use candle::{Candle, DailyCandle, HourlyCandle};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, system_clock};
pub use error::{CandleRule, Error, Result};
pub use exchange::Exchange;
pub use symbol::Symbol;
pub use time::{
    MICROS_PER_MINUTE, date_of, day_start, format_compact, hour_start, minute_aligned, parse_time,
};
