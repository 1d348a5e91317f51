//! Rows to Arrow, the one way every table is written: a [`Builder`] over a slice of rows adds
//! one column per call, each from an accessor, in the schema's order, and `finish` checks the
//! columns against the schema. Timestamps are microseconds in UTC everywhere.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Timelike, Utc};

use crate::Result;

/// Columns built from `rows`, in the order they are added.
pub struct Builder<'a, T> {
    rows: &'a [T],
    columns: Vec<ArrayRef>,
}

impl<'a, T> Builder<'a, T> {
    pub fn new(rows: &'a [T]) -> Self {
        Builder {
            rows,
            columns: Vec::new(),
        }
    }

    fn push(mut self, column: ArrayRef) -> Self {
        self.columns.push(column);
        self
    }

    pub fn text<'b>(self, f: impl Fn(&'a T) -> &'b str) -> Self {
        // Sized before it is filled: Arrow's own builder grows the value buffer by doubling,
        // a check and a copy that cost more than the text itself for the short names every
        // row of a table repeats (a tenth of writing the minute table).
        let bytes: usize = self.rows.iter().map(|r| f(r).len()).sum();
        if i32::try_from(bytes).is_err() {
            // Beyond what a `Utf8` column holds: `finish` names the column as not matching.
            let c = LargeStringArray::from_iter_values(self.rows.iter().map(f));
            return self.push(Arc::new(c));
        }
        let mut values = Vec::with_capacity(bytes);
        let mut offsets = Vec::with_capacity(self.rows.len() + 1);
        offsets.push(0i32);
        for r in self.rows {
            values.extend_from_slice(f(r).as_bytes());
            // At most `bytes`, which fits.
            offsets.push(values.len() as i32);
        }
        let c = StringArray::new(OffsetBuffer::new(offsets.into()), values.into(), None);
        self.push(Arc::new(c))
    }

    /// Text made for each row (a label), where no borrowed text exists.
    pub fn text_owned(self, f: impl Fn(&T) -> String) -> Self {
        let c = StringArray::from_iter_values(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn text_opt<'b>(self, f: impl Fn(&'a T) -> Option<&'b str>) -> Self {
        let c = StringArray::from_iter(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn int32(self, f: impl Fn(&T) -> i32) -> Self {
        let c = Int32Array::from_iter_values(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn int64(self, f: impl Fn(&T) -> i64) -> Self {
        let c = Int64Array::from_iter_values(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn int64_opt(self, f: impl Fn(&T) -> Option<i64>) -> Self {
        let c = Int64Array::from_iter(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn float64(self, f: impl Fn(&T) -> f64) -> Self {
        let c = Float64Array::from_iter_values(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn float64_opt(self, f: impl Fn(&T) -> Option<f64>) -> Self {
        let c = Float64Array::from_iter(self.rows.iter().map(f));
        self.push(Arc::new(c))
    }

    pub fn boolean(self, f: impl Fn(&T) -> bool) -> Self {
        let c = BooleanArray::from_iter(self.rows.iter().map(|r| Some(f(r))));
        self.push(Arc::new(c))
    }

    /// A `Timestamp(Microsecond, "UTC")` column.
    pub fn time(self, f: impl Fn(&T) -> DateTime<Utc>) -> Self {
        let mut day = None;
        let c = TimestampMicrosecondArray::from_iter_values(
            self.rows.iter().map(|r| micros(f(r), &mut day)),
        )
        .with_timezone("UTC");
        self.push(Arc::new(c))
    }

    pub fn time_opt(self, f: impl Fn(&T) -> Option<DateTime<Utc>>) -> Self {
        let c = TimestampMicrosecondArray::from_iter(
            self.rows.iter().map(|r| f(r).map(|t| t.timestamp_micros())),
        )
        .with_timezone("UTC");
        self.push(Arc::new(c))
    }

    /// A batch for display, not storage: the columns named `names`, their types as built.
    pub fn finish_named(self, names: &[&str]) -> Result<RecordBatch> {
        let pairs: Vec<(&str, ArrayRef)> = names.iter().copied().zip(self.columns).collect();
        Ok(RecordBatch::try_from_iter(pairs)?)
    }

    /// The batch, checked against `schema` (column count, types, nullability).
    pub fn finish(self, schema: SchemaRef) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(schema, self.columns)?)
    }
}

/// `t.timestamp_micros()`, with the start of `t`'s day taken from `day` when it is the same
/// day: chrono finds a day's number from its year, month and day for every value, which was
/// the larger part of building the minute table's two time columns, whose rows share a day.
fn micros(t: DateTime<Utc>, day: &mut Option<(chrono::NaiveDate, i64)>) -> i64 {
    // `naive_utc`, not `date_naive` and `Timelike` on the `DateTime`, which add a zero offset
    // with a division first.
    let naive = t.naive_utc();
    let date = naive.date();
    let start = match *day {
        Some((d, start)) if d == date => start,
        _ => {
            let start = date
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros();
            *day = Some((date, start));
            start
        }
    };
    start
        + i64::from(naive.num_seconds_from_midnight()) * 1_000_000
        + i64::from(naive.nanosecond() / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    proptest::proptest! {
        /// The day's start kept from the row before gives what chrono computes, for any
        /// instant (leap seconds included) after any other.
        #[test]
        fn micros_equal_chronos(
            start in -5_000_000_000i64..5_000_000_000,
            // Steps of up to two days, so that most rows share the day of the row before.
            steps in proptest::collection::vec((-172_800i64..172_800, 0u32..2_000_000_000), 1..40),
        ) {
            let mut day = None;
            let mut secs = start;
            for (step, nanos) in steps {
                secs += step / 8;
                let Some(t) = DateTime::from_timestamp(secs, nanos) else { continue };
                proptest::prop_assert_eq!(micros(t, &mut day), t.timestamp_micros(), "{}", t);
            }
        }
    }

    #[test]
    fn columns_follow_the_accessors_and_are_checked_against_the_schema() {
        struct Row {
            name: String,
            note: Option<String>,
            n: i64,
            at: DateTime<Utc>,
        }
        let at = DateTime::from_timestamp(1_700_000_000, 5_000).unwrap();
        let rows = [
            Row {
                name: "a".into(),
                note: None,
                n: 1,
                at,
            },
            Row {
                name: "b".into(),
                note: Some("x".into()),
                n: 2,
                at,
            },
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let b = Builder::new(&rows)
            .text(|r| r.name.as_str())
            .text_opt(|r| r.note.as_deref())
            .int64(|r| r.n)
            .time(|r| r.at)
            .finish(schema.clone())
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        let note = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert!(note.is_null(0) && note.value(1) == "x");
        let t = b
            .column(3)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(t.value(0), 1_700_000_000_000_005);
        // A column short of the schema is an error, not a silently different table.
        assert!(
            Builder::new(&rows)
                .text(|r| r.name.as_str())
                .finish(schema)
                .is_err()
        );
    }
}
