//! What one statement may use: memory (a pool that sorts, aggregates and joins spill out of),
//! disk for those spills, wall time, and the output of functions whose result size is a number
//! the statement chooses (`repeat('x', 2000000000)` must not allocate 2 GB outside the pool).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// The limits of one SQL statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory one statement's operators and its result may hold. Sorts, aggregates and joins
    /// that can spill go to disk past it; what cannot spill fails with an error.
    pub memory_bytes: usize,
    /// Disk the spill files of a statement may take.
    pub spill_bytes: u64,
    /// How long one statement may run.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 2 << 30,
            spill_bytes: 10 << 30,
            timeout: Duration::from_secs(300),
        }
    }
}

impl Limits {
    /// The most one call of a size-choosing function (`repeat`, `lpad`, `rpad`, `array_repeat`,
    /// `range`, `generate_series`) may produce for one batch: an eighth of the memory limit.
    pub fn function_output_bytes(&self) -> usize {
        (self.memory_bytes / 8).max(1 << 20)
    }
}

/// Byte counts for messages: `2 GiB`, `512 MiB`, `300 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// Which argument shape a capped function has, and so how its output is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// `repeat(text, n)`: length of text times n.
    Repeat,
    /// `lpad/rpad(text, n [, fill])`: n characters, up to 4 bytes each.
    Pad,
    /// `array_repeat(value, n)`: n elements.
    ArrayRepeat,
    /// `range/generate_series(start, stop [, step])` over whole numbers, dates or timestamps.
    Series,
    /// `array_resize(array, n [, value])`: n elements.
    Resize,
    /// `replace(text, from, to)`: every occurrence of `from` may become `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: every match (with `g`) may
    /// become the replacement, each group reference in it a copy of the text.
    RegexpReplace,
    /// `levenshtein(a, b)`: not memory but work, the product of the lengths, in one call that
    /// never yields.
    Levenshtein,
}

const CAPPED: [(&str, Shape); 12] = [
    ("repeat", Shape::Repeat),
    ("lpad", Shape::Pad),
    ("rpad", Shape::Pad),
    ("array_repeat", Shape::ArrayRepeat),
    ("list_repeat", Shape::ArrayRepeat),
    ("range", Shape::Series),
    ("generate_series", Shape::Series),
    ("array_resize", Shape::Resize),
    ("list_resize", Shape::Resize),
    ("replace", Shape::Replace),
    ("regexp_replace", Shape::RegexpReplace),
    ("levenshtein", Shape::Levenshtein),
];

/// The most cells one `levenshtein` call over a batch may compute (the sum over its rows of the
/// product of the two lengths): about a second of one core.
pub const LEVENSHTEIN_CELLS: u128 = 400_000_000;

/// Bytes of one row of `v`: what one copy of it in an array costs.
fn row_bytes(v: &ColumnarValue) -> u128 {
    let bytes = match v {
        ColumnarValue::Scalar(s) => s.size(),
        ColumnarValue::Array(a) => a.get_array_memory_size() / a.len().max(1),
    };
    bytes.max(8) as u128
}

/// The text of scalar argument `v`, if it is one.
fn scalar_text(v: &ColumnarValue) -> Option<&str> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(t))
            | ScalarValue::LargeUtf8(Some(t))
            | ScalarValue::Utf8View(Some(t)),
        ) => Some(t.as_str()),
        _ => None,
    }
}

/// A date or timestamp value in nanoseconds, and an interval's shortest length in nanoseconds.
fn nanos(s: &ScalarValue) -> Option<i128> {
    const DAY: i128 = 86_400_000_000_000;
    Some(match s {
        ScalarValue::Date32(Some(d)) => i128::from(*d) * DAY,
        ScalarValue::Date64(Some(ms)) => i128::from(*ms) * 1_000_000,
        ScalarValue::TimestampSecond(Some(v), _) => i128::from(*v) * 1_000_000_000,
        ScalarValue::TimestampMillisecond(Some(v), _) => i128::from(*v) * 1_000_000,
        ScalarValue::TimestampMicrosecond(Some(v), _) => i128::from(*v) * 1_000,
        ScalarValue::TimestampNanosecond(Some(v), _) => i128::from(*v),
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            i128::from(i.months) * 28 * DAY + i128::from(i.days) * DAY + i128::from(i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i128::from(i.days) * DAY + i128::from(i.milliseconds) * 1_000_000
        }
        ScalarValue::IntervalYearMonth(Some(m)) => i128::from(*m) * 28 * DAY,
        _ => return None,
    })
}

/// Whether `v` is a date, timestamp or interval (a temporal series' argument).
fn temporal(v: &ColumnarValue) -> bool {
    use DataType::*;
    matches!(
        v.data_type(),
        Date32 | Date64 | Timestamp(_, _) | Interval(_)
    )
}

/// Row `i` of `v` as a scalar.
fn scalar_at(v: &ColumnarValue, i: usize) -> Option<ScalarValue> {
    match v {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, i).ok(),
    }
}

/// Replaces the size-choosing functions of `ctx` with ones that refuse, before allocating, an
/// output past `cap` bytes per batch.
pub(crate) fn cap_functions(ctx: &SessionContext, cap: usize) -> DfResult<()> {
    for (name, shape) in CAPPED {
        let Ok(inner) = ctx.udf(name) else { continue };
        ctx.register_udf(ScalarUDF::new_from_impl(Capped {
            inner: inner.as_ref().clone(),
            shape,
            cap,
        }));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: ScalarUDF,
    shape: Shape,
    cap: usize,
}

/// The whole numbers of argument `v` for each of `rows` rows (nulls as 0).
fn ints(v: &ColumnarValue, rows: usize) -> Vec<i64> {
    match v {
        ColumnarValue::Scalar(s) => {
            let n = match s {
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                ScalarValue::UInt64(Some(n)) => i64::try_from(*n).unwrap_or(i64::MAX),
                _ => 0,
            };
            vec![n; rows]
        }
        ColumnarValue::Array(a) => match a.as_primitive_opt::<Int64Type>() {
            Some(a) => (0..a.len())
                .map(|i| if a.is_null(i) { 0 } else { a.value(i) })
                .collect(),
            None => vec![0; rows],
        },
    }
}

/// The byte length of text argument `v` for each of `rows` rows (nulls and non-text as 1).
fn text_lengths(v: &ColumnarValue, rows: usize) -> Vec<u128> {
    match v {
        ColumnarValue::Scalar(s) => {
            let n = match s {
                ScalarValue::Utf8(Some(t))
                | ScalarValue::LargeUtf8(Some(t))
                | ScalarValue::Utf8View(Some(t)) => t.len(),
                _ => 1,
            };
            vec![n as u128; rows]
        }
        ColumnarValue::Array(a) => {
            let len = |i: usize, n: usize| if a.is_null(i) { 0 } else { n as u128 };
            match a.data_type() {
                DataType::Utf8 => {
                    let s = a.as_string::<i32>();
                    (0..s.len()).map(|i| len(i, s.value(i).len())).collect()
                }
                DataType::LargeUtf8 => {
                    let s = a.as_string::<i64>();
                    (0..s.len()).map(|i| len(i, s.value(i).len())).collect()
                }
                DataType::Utf8View => {
                    let s = a.as_string_view();
                    (0..s.len()).map(|i| len(i, s.value(i).len())).collect()
                }
                _ => vec![1; a.len()],
            }
        }
    }
}

impl Capped {
    /// An upper estimate of the bytes one call over `args` produces.
    fn estimate(&self, args: &[ColumnarValue], rows: usize) -> u128 {
        let rows = match args.iter().find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        }) {
            Some(n) => n,
            None => rows.max(1),
        };
        let count = |i: usize| {
            args.get(i)
                .map(|a| ints(a, rows))
                .unwrap_or_else(|| vec![0; rows])
        };
        let positive = |n: i64| u128::try_from(n.max(0)).unwrap_or(0);
        match self.shape {
            Shape::Repeat => {
                let lens = args
                    .first()
                    .map(|a| text_lengths(a, rows))
                    .unwrap_or_default();
                lens.iter()
                    .zip(count(1))
                    .map(|(l, n)| l.saturating_mul(positive(n)))
                    .sum()
            }
            Shape::Pad => count(1)
                .into_iter()
                .map(|n| positive(n).saturating_mul(4))
                .sum(),
            Shape::ArrayRepeat => {
                // Each copy is the whole value: an array of arrays repeated is that much more.
                let each = args.first().map_or(8, row_bytes);
                count(1)
                    .into_iter()
                    .map(|n| positive(n).saturating_mul(each))
                    .sum()
            }
            Shape::Resize => {
                let each = args.get(2).map_or(8, row_bytes);
                count(1)
                    .into_iter()
                    .map(|n| positive(n).saturating_mul(each))
                    .sum()
            }
            Shape::Replace | Shape::RegexpReplace | Shape::Levenshtein => {
                let lens = |i: usize| {
                    args.get(i)
                        .map(|a| text_lengths(a, rows))
                        .unwrap_or_else(|| vec![0; rows])
                };
                let (text, second, third) = (lens(0), lens(1), lens(2));
                match self.shape {
                    Shape::Levenshtein => text
                        .iter()
                        .zip(&second)
                        .map(|(a, b)| a.saturating_mul(*b))
                        .sum(),
                    Shape::Replace => (0..rows)
                        .map(|i| {
                            let occurrences = text[i] / second[i].max(1) + 1;
                            text[i].saturating_add(occurrences.saturating_mul(third[i]))
                        })
                        .sum(),
                    _ => {
                        let global = args
                            .get(3)
                            .and_then(scalar_text)
                            .is_some_and(|f| f.contains('g'));
                        // A replacement's group references ($1, ${name}, \\1) copy up to the
                        // whole text each.
                        let refs = args
                            .get(2)
                            .and_then(scalar_text)
                            .map_or(1, |r| r.matches(['$', '\\']).count() as u128);
                        (0..rows)
                            .map(|i| {
                                let matches = if global { text[i] + 1 } else { 1 };
                                let each = third[i].saturating_add(refs.saturating_mul(text[i]));
                                text[i].saturating_add(matches.saturating_mul(each))
                            })
                            .sum()
                    }
                }
            }
            Shape::Series if args.len() >= 2 && args.iter().all(temporal) => (0..rows)
                .map(|i| {
                    let at = |k: usize| {
                        args.get(k)
                            .and_then(|a| scalar_at(a, i))
                            .as_ref()
                            .and_then(nanos)
                    };
                    let (Some(start), Some(stop)) = (at(0), at(1)) else {
                        return 0;
                    };
                    let step = at(2).unwrap_or(86_400_000_000_000).unsigned_abs().max(1);
                    ((stop - start).unsigned_abs() / step + 1).saturating_mul(8)
                })
                .sum(),
            Shape::Series => {
                if args.len() < 2 || !args.iter().all(|a| a.data_type().is_integer()) {
                    return 0;
                }
                let (start, stop) = (count(0), count(1));
                let step = if args.len() > 2 {
                    count(2)
                } else {
                    vec![1; rows]
                };
                (0..rows)
                    .map(|i| {
                        let span = i128::from(stop[i]) - i128::from(start[i]);
                        let step = i128::from(step[i]).unsigned_abs().max(1);
                        (span.unsigned_abs() / step + 1).saturating_mul(8)
                    })
                    .sum()
            }
        }
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let estimate = self.estimate(&args.args, args.number_rows);
        if self.shape == Shape::Levenshtein {
            if estimate > LEVENSHTEIN_CELLS {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "levenshtein() over these texts would compare {estimate} pairs of characters in one batch, past the limit of {LEVENSHTEIN_CELLS}; compare shorter texts"
                )));
            }
            return self.inner.invoke_with_args(args);
        }
        if estimate > self.cap as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would produce about {} for one batch, past the limit of {} for a function's output (an eighth of query.memory_limit)",
                self.name(),
                format_bytes(u64::try_from(estimate).unwrap_or(u64::MAX)),
                format_bytes(self.cap as u64)
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// How long a table's listing is reused: statements within it neither list the table's
/// folders again nor, through the footer cache beside it, read the Parquet footers again; a
/// partition another process writes is seen after it at the latest.
pub const LISTING_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The runtime of a session under `limits`: a fair spilling pool, a bounded spill directory,
/// and listings reused for [`LISTING_REUSE`] (DataFusion's default keeps them forever, and a
/// long-running server would never see a new partition).
pub(crate) fn runtime(
    limits: &Limits,
) -> DfResult<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    use datafusion::execution::disk_manager::DiskManagerBuilder;
    use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(limits.memory_bytes),
        std::num::NonZeroUsize::new(3).expect("nonzero"),
    );
    let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
        .with_list_files_cache_ttl(Some(LISTING_REUSE));
    RuntimeEnvBuilder::new()
        .with_cache_manager(caches)
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_max_temp_directory_size(limits.spill_bytes),
        )
        .build_arc()
}
