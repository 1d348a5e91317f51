//! Rows to Arrow, the one way every table is written: a [`Builder`] over a slice of rows adds
//! one column per call, each from an accessor, in the schema's order, and `finish` checks the
//! columns against the schema. Timestamps are microseconds in UTC everywhere.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};

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
        let c = StringArray::from_iter_values(self.rows.iter().map(f));
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
        let c = TimestampMicrosecondArray::from_iter_values(
            self.rows.iter().map(|r| f(r).timestamp_micros()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

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
