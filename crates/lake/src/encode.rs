//! Arrow encoding of silver and gold rows, kept apart from the domain types.

use arrow::array::{
    Array, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use chrono::{DateTime, NaiveDate, Utc};
use cryptolake_model::{
    Candle, DailyCandle, Exchange, HourlyCandle, MinuteCandle, Outcome, Step, Symbol, schema,
};

use crate::columns::Builder;
use crate::ops::RunRecord;
use crate::quality::{Action, QualityResult, RecordedResult, Rule, Status};
use crate::{Error, Result};

pub fn hourly_to_batch(rows: &[HourlyCandle]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .text(|r| r.symbol.base())
        .text(|r| r.symbol.quote())
        .time(|r| r.open_time)
        .float64(|r| r.open)
        .float64(|r| r.high)
        .float64(|r| r.low)
        .float64(|r| r.close)
        .float64(|r| r.volume)
        .float64_opt(|r| r.quote_volume)
        .int64_opt(|r| r.trade_count)
        .int32(|r| r.minutes_present)
        .int64(|r| r.minute_mask)
        .int64(|r| r.empty_mask)
        .time(|r| r.ingested_at)
        .finish(schema::ohlcv_1h())
}

/// A row of `ohlcv_1m`: a candle, and when the bronze object it came from was fetched. The
/// build writes rows straight from the minutes it parsed, without copying them into
/// [`MinuteCandle`]s first.
pub trait MinuteRow {
    fn candle(&self) -> &Candle;
    fn fetched_at(&self) -> DateTime<Utc>;
}

impl<T: MinuteRow> MinuteRow for &T {
    fn candle(&self) -> &Candle {
        (**self).candle()
    }
    fn fetched_at(&self) -> DateTime<Utc> {
        (**self).fetched_at()
    }
}

impl MinuteRow for MinuteCandle {
    fn candle(&self) -> &Candle {
        &self.candle
    }
    fn fetched_at(&self) -> DateTime<Utc> {
        self.fetched_at
    }
}

pub fn minutes_to_batch<R: MinuteRow>(rows: &[R]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.candle().exchange.as_str())
        .text(|r| r.candle().symbol.as_str())
        .time(|r| r.candle().open_time)
        .float64(|r| r.candle().open)
        .float64(|r| r.candle().high)
        .float64(|r| r.candle().low)
        .float64(|r| r.candle().close)
        .float64(|r| r.candle().volume)
        .float64_opt(|r| r.candle().quote_volume)
        .int64_opt(|r| r.candle().trade_count)
        .float64_opt(|r| r.candle().taker_buy_volume)
        .float64_opt(|r| r.candle().taker_buy_quote_volume)
        .time(|r| r.fetched_at())
        .finish(schema::ohlcv_1m())
}

pub fn daily_to_batch(rows: &[DailyCandle]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .float64(|r| r.open)
        .float64(|r| r.high)
        .float64(|r| r.low)
        .float64(|r| r.close)
        .float64(|r| r.volume)
        .float64_opt(|r| r.quote_volume)
        .int64_opt(|r| r.trade_count)
        .int32(|r| r.hours_present)
        .boolean(|r| r.is_complete)
        .finish(schema::ohlcv_1d())
}

/// Typed access to one column of a batch read back from the lake.
struct Columns<'a> {
    batch: &'a RecordBatch,
    what: &'a str,
}

impl<'a> Columns<'a> {
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T> {
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| Error::Data {
                key: self.what.to_string(),
                reason: format!("column {name} is missing or has the wrong type"),
            })
    }

    fn bad(&self, reason: String) -> Error {
        Error::Data {
            key: self.what.to_string(),
            reason,
        }
    }

    fn identity(
        &self,
        ex: &StringArray,
        sym: &StringArray,
        i: usize,
    ) -> Result<(Exchange, Symbol)> {
        let exchange = ex
            .value(i)
            .parse()
            .map_err(|e| self.bad(format!("row {i}: {e}")))?;
        let symbol = Symbol::parse(sym.value(i)).map_err(|e| self.bad(format!("row {i}: {e}")))?;
        Ok((exchange, symbol))
    }

    fn time(&self, a: &TimestampMicrosecondArray, i: usize) -> Result<DateTime<Utc>> {
        DateTime::from_timestamp_micros(a.value(i))
            .ok_or_else(|| self.bad(format!("row {i}: timestamp out of range")))
    }
}

/// The columns silver and gold share: identity, prices and amounts.
struct OhlcvColumns<'a> {
    exchange: &'a StringArray,
    symbol: &'a StringArray,
    open: &'a Float64Array,
    high: &'a Float64Array,
    low: &'a Float64Array,
    close: &'a Float64Array,
    volume: &'a Float64Array,
    quote_volume: &'a Float64Array,
    trade_count: &'a Int64Array,
}

/// One row of those columns.
struct OhlcvRow {
    exchange: Exchange,
    symbol: Symbol,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    quote_volume: Option<f64>,
    trade_count: Option<i64>,
}

impl<'a> OhlcvColumns<'a> {
    fn of(c: &Columns<'a>) -> Result<Self> {
        Ok(OhlcvColumns {
            exchange: c.get("exchange")?,
            symbol: c.get("symbol")?,
            open: c.get("open")?,
            high: c.get("high")?,
            low: c.get("low")?,
            close: c.get("close")?,
            volume: c.get("volume")?,
            quote_volume: c.get("quote_volume")?,
            trade_count: c.get("trade_count")?,
        })
    }

    fn row(&self, c: &Columns<'_>, i: usize) -> Result<OhlcvRow> {
        let (exchange, symbol) = c.identity(self.exchange, self.symbol, i)?;
        Ok(OhlcvRow {
            exchange,
            symbol,
            open: self.open.value(i),
            high: self.high.value(i),
            low: self.low.value(i),
            close: self.close.value(i),
            volume: self.volume.value(i),
            quote_volume: self
                .quote_volume
                .is_valid(i)
                .then(|| self.quote_volume.value(i)),
            trade_count: self
                .trade_count
                .is_valid(i)
                .then(|| self.trade_count.value(i)),
        })
    }
}

/// Decodes silver rows; `what` names the object for error messages.
pub fn hourly_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<HourlyCandle>> {
    let c = Columns { batch, what };
    let cols = OhlcvColumns::of(&c)?;
    let ot = c.get::<TimestampMicrosecondArray>("open_time")?;
    let mp = c.get::<Int32Array>("minutes_present")?;
    let mask = c.get::<Int64Array>("minute_mask").map_err(|_| {
        c.bad(
            "column minute_mask is missing: the partition was written by an older cryptolake; run `cryptolake silver --rebuild`".into(),
        )
    })?;
    // Partitions written before confirmed-empty minutes were recorded have none: the next
    // build of the date (or a rebuild) fills them in.
    let empty = c.get::<Int64Array>("empty_mask").ok();
    let ing = c.get::<TimestampMicrosecondArray>("ingested_at")?;
    (0..batch.num_rows())
        .map(|i| {
            let r = cols.row(&c, i)?;
            Ok(HourlyCandle {
                exchange: r.exchange,
                symbol: r.symbol,
                open_time: c.time(ot, i)?,
                open: r.open,
                high: r.high,
                low: r.low,
                close: r.close,
                volume: r.volume,
                quote_volume: r.quote_volume,
                trade_count: r.trade_count,
                minutes_present: mp.value(i),
                minute_mask: mask.value(i),
                empty_mask: empty.map_or(0, |e| e.value(i)),
                ingested_at: c.time(ing, i)?,
            })
        })
        .collect()
}

/// Decodes `ohlcv_1m` rows; `what` names the object for error messages. The rows are taken
/// as the lake wrote them: the values are not checked again.
pub fn minutes_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<MinuteCandle>> {
    let c = Columns { batch, what };
    let cols = OhlcvColumns::of(&c)?;
    let ot = c.get::<TimestampMicrosecondArray>("open_time")?;
    let tb = c.get::<Float64Array>("taker_buy_volume")?;
    let tq = c.get::<Float64Array>("taker_buy_quote_volume")?;
    let fetched = c.get::<TimestampMicrosecondArray>("fetched_at")?;
    let opt = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| {
            let r = cols.row(&c, i)?;
            Ok(MinuteCandle {
                candle: Candle {
                    exchange: r.exchange,
                    symbol: r.symbol,
                    open_time: c.time(ot, i)?,
                    open: r.open,
                    high: r.high,
                    low: r.low,
                    close: r.close,
                    volume: r.volume,
                    quote_volume: r.quote_volume,
                    trade_count: r.trade_count,
                    taker_buy_volume: opt(tb, i),
                    taker_buy_quote_volume: opt(tq, i),
                },
                fetched_at: c.time(fetched, i)?,
            })
        })
        .collect()
}

/// Decodes gold rows of one partition date.
pub fn daily_from_batch(
    batch: &RecordBatch,
    date: NaiveDate,
    what: &str,
) -> Result<Vec<DailyCandle>> {
    let c = Columns { batch, what };
    let cols = OhlcvColumns::of(&c)?;
    let hp = c.get::<Int32Array>("hours_present")?;
    let ic = c.get::<BooleanArray>("is_complete")?;
    (0..batch.num_rows())
        .map(|i| {
            let r = cols.row(&c, i)?;
            Ok(DailyCandle {
                exchange: r.exchange,
                symbol: r.symbol,
                date,
                open: r.open,
                high: r.high,
                low: r.low,
                close: r.close,
                volume: r.volume,
                quote_volume: r.quote_volume,
                trade_count: r.trade_count,
                hours_present: hp.value(i),
                is_complete: ic.value(i),
            })
        })
        .collect()
}

impl Columns<'_> {
    fn text_opt(a: &StringArray, i: usize) -> Option<&str> {
        a.is_valid(i).then(|| a.value(i))
    }
}

/// Decodes rows of `crypto_ops.runs`; a step or status this build does not know is an error
/// naming the row.
pub fn runs_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<RunRecord>> {
    let c = Columns { batch, what };
    let run_id = c.get::<StringArray>("run_id")?;
    let step = c.get::<StringArray>("step")?;
    let started = c.get::<TimestampMicrosecondArray>("started_at")?;
    let finished = c.get::<TimestampMicrosecondArray>("finished_at")?;
    let status = c.get::<StringArray>("status")?;
    let inputs = c.get::<Int64Array>("inputs")?;
    let outputs = c.get::<Int64Array>("outputs")?;
    let rows = c.get::<Int64Array>("rows")?;
    let quarantined = c.get::<Int64Array>("quarantined")?;
    let error = c.get::<StringArray>("error")?;
    let details = c.get::<StringArray>("details")?;
    (0..batch.num_rows())
        .map(|i| {
            let (s, exchange) = Step::parse_label(step.value(i))
                .ok_or_else(|| c.bad(format!("row {i}: unknown step {:?}", step.value(i))))?;
            Ok(RunRecord {
                run_id: run_id.value(i).to_string(),
                step: s,
                exchange,
                started_at: c.time(started, i)?,
                finished_at: c.time(finished, i)?,
                status: Outcome::parse(status.value(i)).ok_or_else(|| {
                    c.bad(format!("row {i}: unknown status {:?}", status.value(i)))
                })?,
                inputs: inputs.value(i),
                outputs: outputs.value(i),
                rows: rows.value(i),
                quarantined: quarantined.value(i),
                error: Columns::text_opt(error, i).map(str::to_string),
                details: details.value(i).to_string(),
            })
        })
        .collect()
}

/// Decodes rows of `crypto_ops.quality_results`; a rule, status, step, exchange or symbol this
/// build does not know is an error naming the row.
pub fn quality_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<RecordedResult>> {
    let c = Columns { batch, what };
    let run_id = c.get::<StringArray>("run_id")?;
    let step = c.get::<StringArray>("step")?;
    let checked = c.get::<TimestampMicrosecondArray>("checked_at")?;
    let rule = c.get::<StringArray>("rule")?;
    let action = c.get::<StringArray>("action")?;
    let status = c.get::<StringArray>("status")?;
    let exchange = c.get::<StringArray>("exchange")?;
    let symbol = c.get::<StringArray>("symbol")?;
    let subject = c.get::<StringArray>("subject")?;
    let observed = c.get::<Float64Array>("observed")?;
    let threshold = c.get::<Float64Array>("threshold")?;
    let message = c.get::<StringArray>("message")?;
    let unknown = |i: usize, what: &str, v: &str| c.bad(format!("row {i}: unknown {what} {v:?}"));
    (0..batch.num_rows())
        .map(|i| {
            let result = QualityResult {
                rule: Rule::parse(rule.value(i))
                    .ok_or_else(|| unknown(i, "rule", rule.value(i)))?,
                action: Action::parse(action.value(i))
                    .ok_or_else(|| unknown(i, "action", action.value(i)))?,
                status: Status::parse(status.value(i))
                    .ok_or_else(|| unknown(i, "status", status.value(i)))?,
                exchange: Columns::text_opt(exchange, i)
                    .map(|e| e.parse().map_err(|e| c.bad(format!("row {i}: {e}"))))
                    .transpose()?,
                symbol: Columns::text_opt(symbol, i)
                    .map(|s| Symbol::parse(s).map_err(|e| c.bad(format!("row {i}: {e}"))))
                    .transpose()?,
                subject: Columns::text_opt(subject, i).map(str::to_string),
                observed: observed.is_valid(i).then(|| observed.value(i)),
                threshold: threshold.is_valid(i).then(|| threshold.value(i)),
                message: message.value(i).to_string(),
            };
            Ok(RecordedResult {
                run_id: run_id.value(i).to_string(),
                step: Step::parse(step.value(i))
                    .ok_or_else(|| unknown(i, "step", step.value(i)))?,
                checked_at: c.time(checked, i)?,
                result,
            })
        })
        .collect()
}
