//! Tables served from memory. A long-running front end whose pipeline already holds a table's
//! partitions decoded (the read model) scans those batches instead of the files, so a
//! statement neither lists folders nor opens footers. The files stay the way in when the
//! memory does not hold a table, or when the range asked for is too large to hold.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::Session;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use cryptolake_model::schema::PARTITION_COLUMN;

/// The dates a statement's filters allow a table's partitions to have; bounds are inclusive,
/// `None` is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    pub first: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
}

impl DateRange {
    /// Whether no date lies in it.
    pub fn is_empty(&self) -> bool {
        matches!((self.first, self.last), (Some(f), Some(l)) if f > l)
    }

    fn at_least(&mut self, d: NaiveDate) {
        self.first = Some(self.first.map_or(d, |f| f.max(d)));
    }

    fn at_most(&mut self, d: NaiveDate) {
        self.last = Some(self.last.map_or(d, |l| l.min(d)));
    }
}

/// Where a table's partitions can be had already decoded.
#[async_trait]
pub trait Partitions: Send + Sync {
    /// The partitions of the table kept under lake `prefix` whose dates lie in `range`, each
    /// as the batches [`table_batches`] makes, all from one version of the lake. `None` when
    /// they are not to be had from memory (a table not held, a range too large to hold): the
    /// statement then reads the files.
    async fn partitions(
        &self,
        prefix: &str,
        range: DateRange,
    ) -> Result<Option<Vec<Vec<RecordBatch>>>, String>;
}

/// One partition's batches, as read from its file, in the table's SQL schema: its file
/// columns in the declared order and types (a column the file lacks is null, as the file
/// reader would make it), and the partition's date last.
pub fn table_batches(
    prefix: &str,
    date: NaiveDate,
    batches: &[RecordBatch],
) -> Result<Vec<RecordBatch>, String> {
    let schema = table_schema(prefix).ok_or_else(|| format!("no SQL table is kept at {prefix}"))?;
    let days = (date - NaiveDate::default()).num_days() as i32;
    batches
        .iter()
        .map(|b| {
            let n = b.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields().iter() {
                if field.name() == PARTITION_COLUMN {
                    columns.push(Arc::new(Date32Array::from_value(days, n)));
                    continue;
                }
                let column = match b.column_by_name(field.name()) {
                    Some(c) if c.data_type() == field.data_type() => c.clone(),
                    Some(c) => cast(c, field.data_type())
                        .map_err(|e| format!("{prefix} column {}: {e}", field.name()))?,
                    None if field.is_nullable() => new_null_array(field.data_type(), n),
                    None => {
                        return Err(format!("{prefix} on {date} has no column {}", field.name()));
                    }
                };
                columns.push(column);
            }
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| format!("{prefix} on {date}: {e}"))
        })
        .collect()
}

/// The schema SQL sees for the table kept under `prefix`: its file columns, then `date`.
pub(crate) fn table_schema(prefix: &str) -> Option<SchemaRef> {
    let (_, _, _, file) = crate::tables()
        .into_iter()
        .find(|(_, _, p, _)| p == prefix)?;
    let mut fields: Vec<_> = file.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        PARTITION_COLUMN,
        arrow::datatypes::DataType::Date32,
        false,
    )));
    Some(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// A table scanned from [`Partitions`] where it can be, and from its files where not.
pub(crate) struct FromMemory {
    prefix: String,
    files: Arc<dyn TableProvider>,
    source: Arc<dyn Partitions>,
}

impl FromMemory {
    pub(crate) fn new(
        prefix: String,
        files: Arc<dyn TableProvider>,
        source: Arc<dyn Partitions>,
    ) -> Self {
        FromMemory {
            prefix,
            files,
            source,
        }
    }
}

impl fmt::Debug for FromMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromMemory")
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[async_trait]
impl TableProvider for FromMemory {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is offered to the scan (which uses those on `date` to choose the
    /// partitions) and applied again above it.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = date_range(filters);
        let held = match range.is_empty() {
            true => Some(Vec::new()),
            false => self
                .source
                .partitions(&self.prefix, range)
                .await
                .map_err(|e| DataFusionError::External(e.into()))?,
        };
        let Some(parts) = held else {
            return self.files.scan(state, projection, filters, limit).await;
        };
        // Whole partitions, in date order, spread over as many streams as the session runs.
        let streams = state
            .config()
            .target_partitions()
            .clamp(1, parts.len().max(1));
        let per = parts.len().div_ceil(streams).max(1);
        let groups: Vec<Vec<RecordBatch>> = match parts.is_empty() {
            true => vec![Vec::new()],
            false => parts.chunks(per).map(|c| c.concat()).collect(),
        };
        let source = MemorySourceConfig::try_new(&groups, self.schema(), projection.cloned())?
            .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}

/// The partition dates that `filters` (a scan's, each a conjunction) allow.
pub fn date_range(filters: &[Expr]) -> DateRange {
    let mut range = DateRange::default();
    for f in filters {
        for e in split_conjunction(f) {
            narrow(&mut range, e);
        }
    }
    range
}

fn narrow(range: &mut DateRange, e: &Expr) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, d) = match (is_date(left), literal_date(right)) {
                (true, Some(d)) => (*op, d),
                _ => match (is_date(right), literal_date(left), op.swap()) {
                    (true, Some(d), Some(op)) => (op, d),
                    _ => return,
                },
            };
            match op {
                Operator::Eq => {
                    range.at_least(d);
                    range.at_most(d);
                }
                Operator::GtEq => range.at_least(d),
                Operator::LtEq => range.at_most(d),
                Operator::Gt => match d.succ_opt() {
                    Some(n) => range.at_least(n),
                    None => range.at_least(d),
                },
                Operator::Lt => match d.pred_opt() {
                    Some(p) => range.at_most(p),
                    None => range.at_most(d),
                },
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_date(expr) => {
            if let Some(l) = literal_date(low) {
                range.at_least(l);
            }
            if let Some(h) = literal_date(high) {
                range.at_most(h);
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_date(expr) => {
            let dates: Option<Vec<NaiveDate>> = list.iter().map(literal_date).collect();
            if let Some(dates) = dates
                && let (Some(lo), Some(hi)) = (dates.iter().min(), dates.iter().max())
            {
                range.at_least(*lo);
                range.at_most(*hi);
            }
        }
        _ => {}
    }
}

fn is_date(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == PARTITION_COLUMN)
}

fn literal_date(e: &Expr) -> Option<NaiveDate> {
    match e {
        Expr::Literal(ScalarValue::Date32(Some(days)), _) => {
            NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(*days)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn date_lit(s: &str) -> Expr {
        lit(ScalarValue::Date32(Some(
            (day(s) - NaiveDate::default()).num_days() as i32,
        )))
    }

    #[test]
    fn filters_on_the_date_narrow_the_partitions_read() {
        let between = col("date").between(date_lit("2024-01-01"), date_lit("2024-03-31"));
        let r = date_range(&[between.and(col("symbol").eq(lit("BTC-USDT")))]);
        assert_eq!(
            (r.first, r.last),
            (Some(day("2024-01-01")), Some(day("2024-03-31")))
        );

        // Strict bounds, and the literal on the left.
        let r = date_range(&[
            col("date").gt(date_lit("2024-01-01")),
            date_lit("2024-02-01").gt(col("date")),
        ]);
        assert_eq!(
            (r.first, r.last),
            (Some(day("2024-01-02")), Some(day("2024-01-31")))
        );

        let r = date_range(&[
            col("date").in_list(vec![date_lit("2024-05-02"), date_lit("2024-04-30")], false)
        ]);
        assert_eq!(
            (r.first, r.last),
            (Some(day("2024-04-30")), Some(day("2024-05-02")))
        );

        // Two equalities that cannot both hold: no partition.
        let r = date_range(&[
            col("date").eq(date_lit("2024-01-01")),
            col("date").eq(date_lit("2024-01-02")),
        ]);
        assert!(r.is_empty());
    }

    #[test]
    fn filters_that_do_not_bound_the_date_read_everything() {
        for f in [
            col("date").not_eq(date_lit("2024-01-01")),
            col("date")
                .between(date_lit("2024-01-01"), date_lit("2024-01-31"))
                .or(col("symbol").eq(lit("X"))),
            col("date").not_between(date_lit("2024-01-01"), date_lit("2024-01-31")),
            col("date").in_list(vec![date_lit("2024-01-01")], true),
            col("open").gt(lit(1.0)),
        ] {
            assert_eq!(
                date_range(std::slice::from_ref(&f)),
                DateRange::default(),
                "{f}"
            );
        }
    }
}
