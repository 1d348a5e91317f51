use object_store::path::Path;

/// Errors of lake operations. Each names the key or value involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid lake URL {url:?}: {reason}")]
    LakeUrl { url: String, reason: String },
    #[error("storage error at {key}: {}", crate::store::root_cause(source))]
    Store {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("storage error: {}", crate::store::root_cause(.0))]
    StoreOther(#[from] object_store::Error),
    #[error("parquet error in {key}: {source}")]
    Parquet {
        key: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("corrupt state document {key}: {reason}")]
    State { key: String, reason: String },
    #[error("bronze object {key}: {reason}")]
    Bronze { key: String, reason: String },
    #[error("unexpected data in {key}: {reason}")]
    Data { key: String, reason: String },
    #[error("the lake is busy: {name} is held by {holder} until {expires_at}")]
    Busy {
        name: String,
        holder: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error(
        "lost the {name} lease to {holder} while working; nothing after that point was committed"
    )]
    LeaseLost { name: String, holder: String },
    #[error("ingest of {symbol} on {exchange}: {source}")]
    Source {
        exchange: String,
        symbol: String,
        #[source]
        source: cryptolake_sources::Error,
    },
    #[error(
        "quality rule {rule} (action fail) broken in {key}, record {index}: {reason}; nothing was committed"
    )]
    QualityFailed {
        rule: String,
        key: String,
        index: usize,
        reason: String,
    },
    #[error(
        "{exchange} banned this client (HTTP 418) until {until}; no request is sent to it before then. To try sooner, delete {state} in the lake"
    )]
    Banned {
        exchange: String,
        until: chrono::DateTime<chrono::Utc>,
        /// The state object that records the ban.
        state: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn store(key: &Path, source: object_store::Error) -> Error {
        Error::Store {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn parquet(key: &Path, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            key: key.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
