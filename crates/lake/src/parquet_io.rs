//! Parquet files of the lake: zstd, microsecond UTC timestamps (from the schemas), one row group
//! per partition file at our sizes, sorting recorded in the footer.

use arrow::array::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::{Error, Lake, Result};

const ROW_GROUP_ROWS: usize = 1 << 20;

/// Writes `batch` as the whole object at `key`. The store makes the object appear atomically
/// (an S3 PUT or multipart completion; a rename on local disk).
pub async fn write_parquet(
    lake: &Lake,
    key: &Path,
    batch: &RecordBatch,
    sorted_by: &[usize],
) -> Result<()> {
    let perr = |source| Error::Parquet {
        key: key.to_string(),
        source,
    };
    let sorting = sorted_by
        .iter()
        .map(|&i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect::<Vec<_>>();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(perr)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting))
        .set_created_by(concat!("cryptolake ", env!("CARGO_PKG_VERSION")).to_string())
        .build();
    lake.write_whole(key, |target| async move {
        let sink = BufWriter::new(lake.store().clone(), target);
        let mut writer =
            AsyncArrowWriter::try_new(sink, batch.schema(), Some(props)).map_err(perr)?;
        writer.write(batch).await.map_err(perr)?;
        writer.close().await.map_err(perr)?;
        Ok(())
    })
    .await
}

/// Reads a whole Parquet object.
pub async fn read_parquet(lake: &Lake, key: &Path) -> Result<Vec<RecordBatch>> {
    let perr = |source| Error::Parquet {
        key: key.to_string(),
        source,
    };
    let bytes = lake.get(key).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(perr)?
        .build()
        .map_err(perr)?;
    reader
        .map(|b| b.map_err(Error::Arrow))
        .collect::<Result<Vec<_>>>()
}
