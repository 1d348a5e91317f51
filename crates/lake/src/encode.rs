//! Arrow encoding of silver and gold rows, kept apart from the domain types.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use chrono::{DateTime, NaiveDate, Utc};
use cryptolake_model::{DailyCandle, Exchange, HourlyCandle, Symbol, schema};

use crate::{Error, Result};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn utc_micros(values: Vec<i64>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(values).with_timezone("UTC")
}

pub fn hourly_to_batch(rows: &[HourlyCandle]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.exchange.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.symbol.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.symbol.base()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.symbol.quote()),
        )),
        Arc::new(utc_micros(
            rows.iter().map(|r| micros(r.open_time)).collect(),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.open))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.high))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.low))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.close))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.volume),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.quote_volume))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.trade_count))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.minutes_present),
        )),
        Arc::new(utc_micros(
            rows.iter().map(|r| micros(r.ingested_at)).collect(),
        )),
    ];
    Ok(RecordBatch::try_new(schema::ohlcv_1h(), cols)?)
}

pub fn daily_to_batch(rows: &[DailyCandle]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.exchange.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.symbol.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.open))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.high))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.low))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.close))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.volume),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.quote_volume))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.trade_count))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.hours_present),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.is_complete)),
        )),
    ];
    Ok(RecordBatch::try_new(schema::ohlcv_1d(), cols)?)
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

fn opt<T: Array>(a: &T, i: usize) -> bool {
    a.is_valid(i)
}

/// Decodes silver rows; `what` names the object for error messages.
pub fn hourly_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<HourlyCandle>> {
    let c = Columns { batch, what };
    let ex = c.get::<StringArray>("exchange")?;
    let sym = c.get::<StringArray>("symbol")?;
    let ot = c.get::<TimestampMicrosecondArray>("open_time")?;
    let (o, h, l, cl, v) = (
        c.get::<Float64Array>("open")?,
        c.get::<Float64Array>("high")?,
        c.get::<Float64Array>("low")?,
        c.get::<Float64Array>("close")?,
        c.get::<Float64Array>("volume")?,
    );
    let qv = c.get::<Float64Array>("quote_volume")?;
    let tc = c.get::<Int64Array>("trade_count")?;
    let mp = c.get::<Int32Array>("minutes_present")?;
    let ing = c.get::<TimestampMicrosecondArray>("ingested_at")?;
    (0..batch.num_rows())
        .map(|i| {
            let (exchange, symbol) = c.identity(ex, sym, i)?;
            Ok(HourlyCandle {
                exchange,
                symbol,
                open_time: c.time(ot, i)?,
                open: o.value(i),
                high: h.value(i),
                low: l.value(i),
                close: cl.value(i),
                volume: v.value(i),
                quote_volume: opt(qv, i).then(|| qv.value(i)),
                trade_count: opt(tc, i).then(|| tc.value(i)),
                minutes_present: mp.value(i),
                ingested_at: c.time(ing, i)?,
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
    let ex = c.get::<StringArray>("exchange")?;
    let sym = c.get::<StringArray>("symbol")?;
    let (o, h, l, cl, v) = (
        c.get::<Float64Array>("open")?,
        c.get::<Float64Array>("high")?,
        c.get::<Float64Array>("low")?,
        c.get::<Float64Array>("close")?,
        c.get::<Float64Array>("volume")?,
    );
    let qv = c.get::<Float64Array>("quote_volume")?;
    let tc = c.get::<Int64Array>("trade_count")?;
    let hp = c.get::<Int32Array>("hours_present")?;
    let ic = c.get::<BooleanArray>("is_complete")?;
    (0..batch.num_rows())
        .map(|i| {
            let (exchange, symbol) = c.identity(ex, sym, i)?;
            Ok(DailyCandle {
                exchange,
                symbol,
                date,
                open: o.value(i),
                high: h.value(i),
                low: l.value(i),
                close: cl.value(i),
                volume: v.value(i),
                quote_volume: opt(qv, i).then(|| qv.value(i)),
                trade_count: opt(tc, i).then(|| tc.value(i)),
                hours_present: hp.value(i),
                is_complete: ic.value(i),
            })
        })
        .collect()
}
