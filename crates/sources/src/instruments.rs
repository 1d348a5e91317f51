//! The instruments a venue lists, asked for once per client and kept: a symbol it does not
//! list is refused by name before any candle request goes out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
use tokio::sync::OnceCell;

use crate::http::BodyCheck;
use crate::{Error, Result};

/// Instruments as a venue lists them: each id with its listing time, where it gives one.
pub type InstrumentList = Vec<(String, Option<DateTime<Utc>>)>;

/// What a newest-first venue's body check finds: `Ok(Ok(open times))` of a page's rows (in
/// milliseconds, where a row has one), `Ok(Err(e))` the venue's own error, `Err` not the
/// venue's response at all.
pub type PageHeads<E> = Result<Result<Vec<Option<i64>>, E>, String>;

/// Instrument id to its listing time, where the venue gives one.
pub type Listing = HashMap<String, Option<DateTime<Utc>>>;

/// A listing fetched at most once (a failed fetch is tried again next time).
#[derive(Debug, Clone, Default)]
pub struct Instruments(Arc<OnceCell<Arc<Listing>>>);

impl Instruments {
    /// The listing time of `instrument` (`None` when the venue gives none), fetching the
    /// listing with `load` the first time; [`Error::NotListed`] when the venue does not list it.
    pub async fn require<F, Fut>(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        instrument: &str,
        load: F,
    ) -> Result<Option<DateTime<Utc>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Listing>>,
    {
        let listing = self
            .0
            .get_or_try_init(|| async { load().await.map(Arc::new) })
            .await?;
        match listing.get(instrument) {
            Some(listed) => Ok(*listed),
            None => Err(Error::NotListed(format!(
                "{exchange} does not list {symbol} (instrument {instrument} is not among the {} it lists)",
                listing.len()
            ))),
        }
    }
}

/// The body check of a page whose rows' times were read into `found`: `accept` judges the
/// times (a page that fails it is retried), the venue's own error goes through `on_error`,
/// and a body that is not the venue's response is retried.
pub fn check_heads<E, T>(
    found: PageHeads<E>,
    accept: impl FnOnce(Vec<Option<i64>>) -> Result<T, String>,
    on_error: impl FnOnce(E) -> BodyCheck<T>,
) -> BodyCheck<T> {
    match found {
        Ok(Ok(heads)) => match accept(heads) {
            Ok(v) => BodyCheck::Ok(v),
            Err(reason) => BodyCheck::Retry(reason),
        },
        Ok(Err(e)) => on_error(e),
        Err(reason) => BodyCheck::Retry(reason),
    }
}

/// `heads` when a funding page holds at most `limit` records.
pub fn within_limit(heads: Vec<Option<i64>>, limit: usize) -> Result<Vec<Option<i64>>, String> {
    if heads.len() <= limit {
        Ok(heads)
    } else {
        Err(format!(
            "{} funding records; a request holds at most {limit}",
            heads.len()
        ))
    }
}

/// The earliest time among `heads` (milliseconds: open times, funding times) inside
/// `[start, end)`, when it is after `start`: a newest-first page that stops there has not
/// answered the window's older part.
pub fn resume_before(
    heads: &[Option<i64>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let (s, e) = (start.timestamp_millis(), end.timestamp_millis());
    heads
        .iter()
        .flatten()
        .copied()
        .filter(|t| (s..e).contains(t))
        .min()
        .filter(|t| *t > s)
        .and_then(DateTime::from_timestamp_millis)
}
