//! Parquet files of the lake: zstd, microsecond UTC timestamps (from the schemas), one row group
//! per partition file at our sizes, sorting recorded in the footer, no dictionary for float columns
//! (nor, in the minute table, for times and counts).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::SortingColumn;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use tokio::io::AsyncWriteExt;

use crate::{Error, Lake, Result};

const ROW_GROUP_ROWS: usize = 1 << 20;

/// Objects up to this size are written with one PUT, whose answer carries the version; larger
/// ones are uploaded in parts.
const SINGLE_PUT_BYTES: usize = 64 << 20;
/// From this size on, a file of row groups (a date's minutes, which the run writing them does
/// not read again) written whole to local disk skips the page cache.
const UNCACHED_BYTES: usize = 1 << 20;

/// Writes `batch` as the whole object at `key` and returns the object's version (its e-tag, as
/// a listing or HEAD reports it). The store makes the object appear atomically (an S3 PUT or
/// multipart completion; a rename on local disk). The file is encoded on the blocking pool, so
/// several partitions encode on several cores at once.
pub async fn write_parquet(
    lake: &Lake,
    key: &Path,
    batch: &RecordBatch,
    sorted_by: &[usize],
) -> Result<String> {
    let props = writer_properties(key, &batch.schema(), sorted_by)?;
    let encode = {
        let batch = batch.clone();
        move || {
            let mut buf = buffers::take(0);
            let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
            writer.write(&batch)?;
            writer.close()?;
            Ok::<_, parquet::errors::ParquetError>(buf)
        }
    };
    let bytes = tokio::task::spawn_blocking(encode)
        .await
        .map_err(|e| Error::Invalid(format!("encoding {key}: {e}")))?
        .map_err(|e| Error::parquet(key, e))?;
    put_whole(lake, key, buffers::bytes(bytes)).await
}

/// The writer settings of every Parquet file of the lake; `sorted_by` names the columns the
/// rows are sorted by, for the footer.
pub(crate) fn writer_properties(
    key: &Path,
    schema: &Schema,
    sorted_by: &[usize],
) -> Result<WriterProperties> {
    let sorting = sorted_by
        .iter()
        .map(|&i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect::<Vec<_>>();
    // Minutes are mostly distinct prices and volumes, which zstd hardly shrinks at any level,
    // and an hour a row group makes many small pages, each of which zstd sets up for anew:
    // Snappy. The smaller tables keep zstd level 3.
    let minutes = key.as_ref().starts_with(crate::paths::SILVER_OHLCV_1M);
    let compression = match minutes {
        true => Compression::SNAPPY,
        false => Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| Error::parquet(key, e))?),
    };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting))
        .set_created_by(concat!("cryptolake ", env!("CARGO_PKG_VERSION")).to_string());
    // Prices and volumes are nearly all distinct: a dictionary for them costs more time than
    // anything else in the write, then falls back to plain pages anyway (and the files come
    // out larger). Names, times and counts repeat and keep theirs, except in the minute table:
    // there a row group is one hour, so a time or count column's dictionary never grows large
    // enough to fall back, yet every value is looked up in it and the indices are encoded
    // besides. Plain pages that Snappy shrinks (an open time repeats once per symbol in a row,
    // a fetch time once per minute) cost 0.6 s less CPU in the medium first build, for a table
    // 2.4% larger.
    for field in schema.fields() {
        let path = || ColumnPath::from(field.name().as_str());
        let float = matches!(field.data_type(), DataType::Float64 | DataType::Float32);
        if float || (minutes && field.data_type() != &DataType::Utf8) {
            props = props.set_column_dictionary_enabled(path(), false);
        }
        // A minute's prices and volumes are as good as random bytes to Snappy: its pages came
        // out a few bytes larger than they went in, for a pass over every value on writing and
        // another on reading.
        if float && minutes {
            props = props.set_column_compression(path(), Compression::UNCOMPRESSED);
        }
        // Each hour of minutes holds every exchange and symbol, so the text columns' minimum
        // and maximum never let a reader skip a row group or a page; comparing every name to
        // find them was a tenth of writing the table.
        if minutes && field.data_type() == &DataType::Utf8 {
            props = props.set_column_statistics_enabled(path(), EnabledStatistics::None);
        }
    }
    Ok(props.build())
}

/// A Parquet object as read, with its footer and page indexes parsed: its row groups can be
/// decoded one at a time, or copied into a new file as they are.
#[derive(Clone)]
pub(crate) struct ParquetFile {
    pub(crate) body: Body,
    pub(crate) metadata: Arc<ParquetMetaData>,
}

/// Where a Parquet object's bytes are: read whole, or an open file of a local lake of which
/// only the footer was read (the rest is read, or copied file to file, when needed).
#[derive(Clone)]
pub(crate) enum Body {
    Bytes(Bytes),
    File(Arc<std::fs::File>),
}

impl ParquetFile {
    pub(crate) fn parse(key: &Path, bytes: Bytes) -> Result<ParquetFile> {
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&bytes)
            .map_err(|e| Error::parquet(key, e))?;
        Ok(ParquetFile {
            body: Body::Bytes(bytes),
            metadata: Arc::new(metadata),
        })
    }

    /// The footer and page indexes of an open local file, read by range.
    pub(crate) fn open(key: &Path, file: std::fs::File) -> Result<ParquetFile> {
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)
            .map_err(|e| Error::parquet(key, e))?;
        Ok(ParquetFile {
            body: Body::File(Arc::new(file)),
            metadata: Arc::new(metadata),
        })
    }

    /// The whole object, read now if only its footer was.
    pub(crate) fn bytes(&self, key: &Path) -> Result<Bytes> {
        match &self.body {
            Body::Bytes(b) => Ok(b.clone()),
            Body::File(file) => {
                use std::io::{Read, Seek};
                let mut file = file.as_ref();
                let mut all = Vec::new();
                file.seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| file.read_to_end(&mut all))
                    .map_err(|e| Error::Invalid(format!("reading {key}: {e}")))?;
                Ok(Bytes::from(all))
            }
        }
    }

    /// The UTC hour every row of row group `i` lies in, by the statistics of the timestamp
    /// column `column`; `None` when its rows span more than one hour (or it has no statistics).
    pub(crate) fn hour_of(&self, i: usize, column: &str) -> Option<i64> {
        const HOUR: i64 = 3_600_000_000;
        let rg = self.metadata.row_group(i);
        let chunk = rg
            .columns()
            .iter()
            .find(|c| c.column_descr().name() == column)?;
        match chunk.statistics()? {
            Statistics::Int64(v) => {
                let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
                (lo.div_euclid(HOUR) == hi.div_euclid(HOUR)).then(|| lo.div_euclid(HOUR) * HOUR)
            }
            _ => None,
        }
    }

    /// The columns row group `i` says its rows are sorted by (ascending), by index.
    pub(crate) fn sorted_by(&self, i: usize) -> Vec<usize> {
        self.metadata
            .row_group(i)
            .sorting_columns()
            .map(|cols| {
                cols.iter()
                    .filter(|c| !c.descending)
                    .map(|c| c.column_idx as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Decodes row groups `groups`, in the file's order, with one reader.
    pub(crate) fn decode_row_groups(
        &self,
        key: &Path,
        groups: Vec<usize>,
    ) -> Result<Vec<RecordBatch>> {
        let perr = |e| Error::parquet(key, e);
        let meta = ArrowReaderMetadata::try_new(self.metadata.clone(), Default::default())
            .map_err(perr)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(self.bytes(key)?, meta)
            .with_row_groups(groups)
            .build()
            .map_err(perr)?;
        reader
            .map(|b| b.map_err(Error::Arrow))
            .collect::<Result<Vec<_>>>()
    }
}

/// A row group of a file being written: one copied from an existing file as it is, or new rows.
pub(crate) enum RowGroup {
    Copied(usize),
    Rows(RecordBatch),
}

/// Writes the whole object at `key` from `groups` in order, each its own row group: new rows
/// are encoded with the lake's writer settings, copied ones are spliced from `source` without
/// decoding (their pages, statistics and page indexes as they were). Returns the version.
///
/// When `source` is a local file and what is copied is its leading row groups (an hourly run
/// adding the day's newest hour), that head of the file is copied file to file and only the
/// rest is encoded in memory: the day's other hours are neither read nor written by this
/// process.
pub(crate) async fn write_row_groups(
    lake: &Lake,
    key: &Path,
    schema: SchemaRef,
    sorted_by: &[usize],
    source: Option<ParquetFile>,
    groups: Vec<RowGroup>,
) -> Result<String> {
    let props = writer_properties(key, &schema, sorted_by)?;
    let groups = Arc::new(groups);
    let new_rows: usize = groups
        .iter()
        .map(|g| match g {
            RowGroup::Rows(batch) => batch.get_array_memory_size(),
            RowGroup::Copied(_) => 0,
        })
        .sum();
    if let Some(ParquetFile {
        body: Body::File(file),
        metadata,
    }) = &source
        && let Some(head) = copied_head(metadata, &groups)
    {
        let job = Encode {
            key: key.clone(),
            schema: schema.clone(),
            props: props.clone(),
            groups: groups.clone(),
            source: Some(metadata.clone()),
            copied_from: None,
            head: Some(head),
            capacity: new_rows,
        };
        match job.run().await {
            Ok(tail) => {
                return lake
                    .put_spliced(key, file.clone(), head, buffers::bytes(tail))
                    .await;
            }
            // Never expected: the writer laid the copied row groups out differently from
            // the file they come from. The file is then written whole.
            Err(e) => tracing::warn!(key = %key, error = %e, "writing the file whole"),
        }
    }
    let copied_from = match &source {
        Some(ParquetFile {
            body: Body::Bytes(bytes),
            ..
        }) => Some(bytes.clone()),
        // The open file is read whole off the runtime's threads.
        Some(file) => {
            let (file, k) = (file.clone(), key.clone());
            Some(
                tokio::task::spawn_blocking(move || file.bytes(&k))
                    .await
                    .map_err(|e| Error::Invalid(format!("reading {key}: {e}")))??,
            )
        }
        None => None,
    };
    // The copied row groups' bytes and about the new rows' size, reserved at once: growing
    // the buffer by doubling copied a day of minutes several times over for one new hour.
    let capacity = copied_from.as_ref().map_or(0, |b| b.len()) + new_rows;
    let job = Encode {
        key: key.clone(),
        schema,
        props,
        groups,
        source: source.map(|s| s.metadata),
        copied_from,
        head: None,
        capacity,
    };
    let bytes = job.run().await?;
    match lake.direct_root() {
        Some(_) if bytes.len() >= UNCACHED_BYTES => {
            lake.put_uncached(key, buffers::bytes(bytes)).await
        }
        _ => put_whole(lake, key, buffers::bytes(bytes)).await,
    }
}

/// The length of the head of a file that holds exactly its first row groups when `groups`
/// copies those row groups first, in order, and then only adds new ones: the magic bytes and
/// each copied column chunk, back to back. `None` otherwise.
fn copied_head(metadata: &ParquetMetaData, groups: &[RowGroup]) -> Option<u64> {
    let copied = groups
        .iter()
        .enumerate()
        .take_while(|(n, g)| matches!(g, RowGroup::Copied(i) if i == n))
        .count();
    if copied == 0
        || groups[copied..]
            .iter()
            .any(|g| matches!(g, RowGroup::Copied(_)))
    {
        return None;
    }
    let mut end = PARQUET_MAGIC_LEN;
    for i in 0..copied {
        for chunk in metadata.row_group(i).columns() {
            let (start, len) = chunk.byte_range();
            if start != end {
                return None;
            }
            end = start.checked_add(len)?;
        }
    }
    Some(end)
}

/// "PAR1", which every Parquet file starts with.
const PARQUET_MAGIC_LEN: u64 = 4;

/// One encoding of a file on the blocking pool.
struct Encode {
    key: Path,
    schema: SchemaRef,
    props: WriterProperties,
    groups: Arc<Vec<RowGroup>>,
    /// The footer of the file the copied row groups come from.
    source: Option<Arc<ParquetMetaData>>,
    /// That whole file; `None` when its head is copied file to file (`head`), which the
    /// encoding then leaves out.
    copied_from: Option<Bytes>,
    head: Option<u64>,
    capacity: usize,
}

impl Encode {
    async fn run(self) -> Result<Vec<u8>> {
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || self.encode())
            .await
            .map_err(|e| Error::Invalid(format!("encoding {key}: {e}")))?
    }

    fn encode(self) -> Result<Vec<u8>> {
        let what = &self.key;
        let perr = |e| Error::parquet(what, e);
        let mut sink = Sink {
            skip: self.head.unwrap_or(0),
            skipped: 0,
            kept: buffers::take(self.capacity),
        };
        let writer =
            ArrowWriter::try_new(&mut sink, self.schema.clone(), Some(self.props)).map_err(perr)?;
        let (mut file, factory) = writer.into_serialized_writer().map_err(perr)?;
        if let Some(source) = &self.source {
            let old = source.file_metadata().schema_descr();
            let new = file.schema_descr();
            if old.columns() != new.columns() {
                return Err(Error::Invalid(format!(
                    "{what}: the file's columns are not the table's; it is rewritten whole"
                )));
            }
        }
        for (index, group) in self.groups.iter().enumerate() {
            let mut rg = file.next_row_group().map_err(perr)?;
            match group {
                RowGroup::Copied(i) => {
                    let source = self.source.as_ref().ok_or_else(|| {
                        Error::Invalid(format!("{what}: a row group to copy without its file"))
                    })?;
                    let old = source.row_group(*i);
                    for (c, chunk) in old.columns().iter().enumerate() {
                        let close = ColumnCloseResult {
                            bytes_written: chunk.compressed_size() as u64,
                            rows_written: old.num_rows() as u64,
                            metadata: chunk.clone(),
                            bloom_filter: None,
                            column_index: source.column_index().map(|ci| ci[*i][c].clone()),
                            offset_index: source.offset_index().map(|oi| oi[*i][c].clone()),
                        };
                        match &self.copied_from {
                            Some(bytes) => rg.append_column(bytes, close),
                            None => rg.append_column(&Elided, close),
                        }
                        .map_err(perr)?;
                    }
                }
                RowGroup::Rows(batch) => {
                    let mut writers = factory.create_column_writers(index).map_err(perr)?;
                    let mut next = writers.iter_mut();
                    for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
                        for leaf in compute_leaves(field, column).map_err(perr)? {
                            let w = next.next().ok_or_else(|| {
                                Error::Invalid(format!("{what}: more columns than the schema's"))
                            })?;
                            w.write(&leaf).map_err(perr)?;
                        }
                    }
                    for w in writers {
                        w.close()
                            .map_err(perr)?
                            .append_to_row_group(&mut rg)
                            .map_err(perr)?;
                    }
                }
            }
            rg.close().map_err(perr)?;
        }
        let written = file.close().map_err(perr)?;
        if let (Some(head), Some(source)) = (self.head, &self.source) {
            // What was left out must be exactly the head of the source: the magic bytes,
            // then each copied column chunk where the source has it.
            let copied = self
                .groups
                .iter()
                .filter(|g| matches!(g, RowGroup::Copied(_)))
                .count();
            let misplaced = (0..copied).find(|&i| {
                let (new, old) = (
                    written.row_group(i).columns(),
                    source.row_group(i).columns(),
                );
                new.len() != old.len()
                    || new
                        .iter()
                        .zip(old)
                        .any(|(n, o)| n.byte_range() != o.byte_range())
            });
            if let Some(i) = misplaced {
                return Err(Error::Invalid(format!(
                    "{what}: row group {i} would not be where the copied head of the file has it"
                )));
            }
            if sink.skipped != head {
                return Err(Error::Invalid(format!(
                    "{what}: {} bytes written in place of the file's {head}-byte head",
                    sink.skipped
                )));
            }
        }
        Ok(sink.kept)
    }
}

/// Where an encoding goes: its first `skip` bytes (the head of a file, copied file to file
/// instead) are counted and dropped, the rest kept.
struct Sink {
    skip: u64,
    skipped: u64,
    kept: Vec<u8>,
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.skip - self.skipped).unwrap_or(usize::MAX);
        let dropped = left.min(buf.len());
        self.skipped += dropped as u64;
        self.kept.extend_from_slice(&buf[dropped..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes of row groups whose file head is copied file to file: the writer is given zeros
/// of the right length, which [`Sink`] drops.
struct Elided;

impl parquet::file::reader::Length for Elided {
    fn len(&self) -> u64 {
        u64::MAX
    }
}

impl parquet::file::reader::ChunkReader for Elided {
    type T = std::io::Repeat;

    fn get_read(&self, _start: u64) -> parquet::errors::Result<std::io::Repeat> {
        Ok(std::io::repeat(0))
    }

    fn get_bytes(&self, _start: u64, _length: usize) -> parquet::errors::Result<Bytes> {
        Err(parquet::errors::ParquetError::General(
            "the bytes of a copied head are not read".into(),
        ))
    }
}

/// Stores an encoded Parquet file as the whole object at `key` and returns its version.
pub(crate) async fn put_whole(lake: &Lake, key: &Path, bytes: Bytes) -> Result<String> {
    let mut version = None;
    lake.write_whole(key, |target| {
        let version = &mut version;
        async move {
            if bytes.len() <= SINGLE_PUT_BYTES {
                *version = Some(lake.put_versioned(&target, bytes).await?);
            } else {
                let mut sink = BufWriter::new(lake.store().clone(), target.clone());
                sink.put(bytes)
                    .await
                    .map_err(|e| Error::store(&target, e))?;
                sink.shutdown()
                    .await
                    .map_err(|e| Error::Invalid(format!("writing {target}: {e}")))?;
            }
            Ok(())
        }
    })
    .await?;
    match version.flatten() {
        Some(v) => Ok(v),
        // A large upload, or a store that answers a PUT without an e-tag: ask.
        None => {
            let meta = lake.head(key).await?.ok_or_else(|| {
                Error::Invalid(format!("{key} is missing right after it was written"))
            })?;
            Ok(crate::state::version(&meta))
        }
    }
}

/// Reads a whole Parquet object.
pub async fn read_parquet(lake: &Lake, key: &Path) -> Result<Vec<RecordBatch>> {
    decode_parquet(key, lake.get(key).await?)
}

/// Decodes a silver partition read from `key` into its hours, in the file's order.
pub(crate) fn decode_hours(
    key: &Path,
    bytes: Bytes,
) -> Result<Vec<cryptolake_model::HourlyCandle>> {
    decode_rows(key, bytes, crate::hourly_from_batch)
}

/// Decodes an `ohlcv_1m` partition read from `key`, sorted by exchange, symbol and open time
/// (the file holds an hour a row group).
pub(crate) fn decode_minutes(
    key: &Path,
    bytes: Bytes,
) -> Result<Vec<cryptolake_model::MinuteCandle>> {
    let mut rows = decode_rows(key, bytes, crate::minutes_from_batch)?;
    rows.sort_by(cryptolake_model::MinuteCandle::row_order);
    Ok(rows)
}

/// The rows of a whole Parquet object read from `key`, each batch decoded by `rows`.
fn decode_rows<T>(
    key: &Path,
    bytes: Bytes,
    rows: fn(&RecordBatch, &str) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for b in decode_parquet(key, bytes)? {
        out.extend(rows(&b, key.as_ref())?);
    }
    Ok(out)
}

/// Decodes a whole Parquet object read from `key`.
pub fn decode_parquet(key: &Path, bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let perr = |e| Error::parquet(key, e);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(perr)?
        .build()
        .map_err(perr)?;
    reader
        .map(|b| b.map_err(Error::Arrow))
        .collect::<Result<Vec<_>>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[tokio::test]
    async fn floats_are_written_without_a_dictionary_names_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("close", DataType::Float64, false),
        ]));
        let n = 5000;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("S{}-USDT", i % 7)),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 100.0 + f64::from(i) * 0.013),
                )),
            ],
        )
        .unwrap();
        let key = Path::from("t/part.parquet");
        write_parquet(&lake, &key, &batch, &[0]).await.unwrap();
        let bytes = lake.get(&key).await.unwrap();
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let chunk = |i: usize| {
            reader
                .metadata()
                .row_group(0)
                .column(i)
                .encodings()
                .collect::<Vec<_>>()
        };
        let dictionary = |e: &Vec<Encoding>| {
            e.contains(&Encoding::RLE_DICTIONARY) || e.contains(&Encoding::PLAIN_DICTIONARY)
        };
        assert!(dictionary(&chunk(0)), "{:?}", chunk(0));
        assert!(!dictionary(&chunk(1)), "{:?}", chunk(1));
        let back = read_parquet(&lake, &key).await.unwrap();
        let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        assert_eq!(back.columns(), batch.columns());
    }

    #[tokio::test]
    async fn minutes_keep_a_dictionary_for_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let batch = hour(3);
        let minutes = Path::from(format!(
            "{}/date=2024-01-01/part-00000.parquet",
            crate::paths::SILVER_OHLCV_1M
        ));
        let other = Path::from("silver/ohlcv_1h/date=2024-01-01/part-00000.parquet");
        let mut encodings = Vec::new();
        for key in [&minutes, &other] {
            write_parquet(&lake, key, &batch, &[1]).await.unwrap();
            let reader = SerializedFileReader::new(lake.get(key).await.unwrap()).unwrap();
            let dictionary = |i: usize| {
                reader
                    .metadata()
                    .row_group(0)
                    .column(i)
                    .encodings()
                    .any(|e| e == Encoding::RLE_DICTIONARY || e == Encoding::PLAIN_DICTIONARY)
            };
            encodings.push((dictionary(0), dictionary(1), dictionary(2)));
            let back = read_parquet(&lake, key).await.unwrap();
            let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
            assert_eq!(back.columns(), batch.columns(), "{key}");
        }
        // Names, times, prices: the minute table's times are plain, other tables' are not.
        assert_eq!(encodings, [(true, false, false), (true, true, false)]);
    }

    /// Hours of a small table: a name, a time in hour `h`, a price.
    fn hour(h: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("at", DataType::Int64, false),
            Field::new("close", DataType::Float64, false),
        ]));
        let n = 500 + h;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("S{}-USDT", i % 7)),
                )),
                Arc::new(arrow::array::Int64Array::from_iter_values(
                    (0..n).map(|i| h * 3_600_000_000 + i),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 100.0 + (h * 1000 + i) as f64 * 0.013),
                )),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_copied_head_is_written_file_to_file_and_the_file_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let schema = hour(0).schema();
        let (first, from_file, from_bytes) = (
            Path::from("t/date=1/part-00000.parquet"),
            Path::from("t/date=2/part-00000.parquet"),
            Path::from("t/date=3/part-00000.parquet"),
        );
        let rows = |hours: &[i64]| hours.iter().map(|h| RowGroup::Rows(hour(*h))).collect();
        write_row_groups(&lake, &first, schema.clone(), &[1], None, rows(&[0, 1, 2]))
            .await
            .unwrap();
        let opened = || async {
            let k = first.clone();
            let (file, _) = lake
                .open_with(&first, move |f| ParquetFile::open(&k, f))
                .await
                .unwrap()
                .unwrap();
            file.unwrap()
        };
        let whole = ParquetFile::parse(&first, lake.get(&first).await.unwrap()).unwrap();
        let next = || {
            let mut g = vec![
                RowGroup::Copied(0),
                RowGroup::Copied(1),
                RowGroup::Copied(2),
            ];
            g.push(RowGroup::Rows(hour(3)));
            g
        };
        // Which writes copy a head: the file's first row groups, then only new ones.
        assert!(copied_head(&whole.metadata, &next()).is_some());
        let middle = vec![
            RowGroup::Copied(0),
            RowGroup::Rows(hour(1)),
            RowGroup::Copied(2),
        ];
        assert_eq!(copied_head(&whole.metadata, &middle), None);
        let skipped = vec![RowGroup::Copied(1), RowGroup::Rows(hour(3))];
        assert_eq!(copied_head(&whole.metadata, &skipped), None);
        assert_eq!(copied_head(&whole.metadata, &rows(&[3])), None);

        // The head copied file to file, against the same file encoded whole in memory.
        let source = opened().await;
        assert!(matches!(source.body, Body::File(_)));
        let v = write_row_groups(
            &lake,
            &from_file,
            schema.clone(),
            &[1],
            Some(source),
            next(),
        )
        .await
        .unwrap();
        write_row_groups(
            &lake,
            &from_bytes,
            schema.clone(),
            &[1],
            Some(whole.clone()),
            next(),
        )
        .await
        .unwrap();
        let (a, b) = (
            lake.get(&from_file).await.unwrap(),
            lake.get(&from_bytes).await.unwrap(),
        );
        assert_eq!(a, b);
        // The encoding alone leaves the head out, and says nothing went astray.
        let head = copied_head(&whole.metadata, &next()).unwrap();
        let tail = Encode {
            key: from_file.clone(),
            schema: schema.clone(),
            props: writer_properties(&from_file, &schema, &[1]).unwrap(),
            groups: Arc::new(next()),
            source: Some(whole.metadata.clone()),
            copied_from: None,
            head: Some(head),
            capacity: 0,
        }
        .run()
        .await
        .unwrap();
        let original = lake.get(&first).await.unwrap();
        assert_eq!([&original[..head as usize], &tail[..]].concat(), b.to_vec());
        assert_eq!(
            v,
            crate::state::version(&lake.head(&from_file).await.unwrap().unwrap())
        );
        let all = |batches: &[RecordBatch]| {
            arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
        };
        let back = read_parquet(&lake, &from_file).await.unwrap();
        let want: Vec<RecordBatch> = (0..4).map(hour).collect();
        assert_eq!(all(&back), all(&want));

        // A file whose middle hour changes is written whole from the open file.
        let source = opened().await;
        let changed = vec![
            RowGroup::Copied(0),
            RowGroup::Rows(hour(7)),
            RowGroup::Copied(2),
        ];
        write_row_groups(&lake, &from_file, schema, &[1], Some(source), changed)
            .await
            .unwrap();
        let back = read_parquet(&lake, &from_file).await.unwrap();
        assert_eq!(all(&back), all(&[hour(0), hour(7), hour(2)]));
    }
}

/// Encoding buffers kept for the next file. A date's minute file is megabytes: a new buffer
/// of that size is mapped fresh from the system (blocks over the allocator's threshold are,
/// see `cryptolake_pipeline::runtime`), and every page of it faulted in and zeroed by the
/// kernel, once per file. A buffer that is given back keeps its pages, so the next file is
/// encoded into memory that is already there.
pub(crate) mod buffers {
    use std::sync::Mutex;

    use bytes::Bytes;

    /// How many buffers are kept (about as many as files encode at once), and the largest
    /// kept: a rare large file's buffer goes back to the system.
    const KEPT: usize = 4;
    const LARGEST_KEPT: usize = 64 << 20;

    static POOL: Pool = Pool::new();

    /// An empty buffer with room for at least `capacity` bytes: a kept one when there is one.
    pub(crate) fn take(capacity: usize) -> Vec<u8> {
        POOL.take(capacity)
    }

    /// `buf` as `Bytes` that give the buffer back when the last of them is dropped (once the
    /// file is written).
    pub(crate) fn bytes(buf: Vec<u8>) -> Bytes {
        POOL.bytes(buf)
    }

    pub(crate) struct Pool {
        kept: Mutex<Vec<Vec<u8>>>,
    }

    impl Pool {
        const fn new() -> Self {
            Pool {
                kept: Mutex::new(Vec::new()),
            }
        }

        fn take(&self, capacity: usize) -> Vec<u8> {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut buf = kept.unwrap_or_default();
            buf.reserve(capacity);
            buf
        }

        /// Keeps `buf` for a later `take`, unless enough are kept or it is too large.
        fn give_back(&self, mut buf: Vec<u8>) {
            if buf.capacity() == 0 || buf.capacity() > LARGEST_KEPT {
                return;
            }
            buf.clear();
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < KEPT {
                kept.push(buf);
            }
        }

        fn bytes(&'static self, buf: Vec<u8>) -> Bytes {
            Bytes::from_owner(Returned(self, buf))
        }
    }

    struct Returned(&'static Pool, Vec<u8>);

    impl AsRef<[u8]> for Returned {
        fn as_ref(&self) -> &[u8] {
            &self.1
        }
    }

    impl Drop for Returned {
        fn drop(&mut self) {
            self.0.give_back(std::mem::take(&mut self.1));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A pool of the test's own: the process's is shared with tests running alongside.
        fn pool() -> &'static Pool {
            Box::leak(Box::new(Pool::new()))
        }

        #[test]
        fn a_buffer_is_kept_once_its_bytes_are_dropped_and_taken_again_empty() {
            let pool = pool();
            let mut buf = pool.take(1 << 20);
            buf.extend_from_slice(b"written");
            let at = buf.as_ptr();
            let bytes = pool.bytes(buf);
            let copy = bytes.clone();
            drop(bytes);
            // Still in use by a copy: not kept yet.
            assert_eq!(pool.take(0).capacity(), 0);
            assert_eq!(&copy[..], b"written");
            drop(copy);
            let again = pool.take(0);
            assert_eq!(again.as_ptr(), at);
            assert!(again.is_empty() && again.capacity() >= 1 << 20);
        }

        #[test]
        fn only_so_many_buffers_are_kept_and_none_too_large() {
            let pool = pool();
            pool.give_back(Vec::with_capacity(LARGEST_KEPT + 1));
            assert_eq!(pool.take(0).capacity(), 0);
            for _ in 0..KEPT + 2 {
                pool.give_back(Vec::with_capacity(16));
            }
            let kept: Vec<Vec<u8>> = (0..KEPT + 2).map(|_| pool.take(0)).collect();
            let with_room = kept.iter().filter(|b| b.capacity() >= 16).count();
            assert_eq!(with_room, KEPT);
        }
    }
}
