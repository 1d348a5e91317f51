use chrono::{DateTime, Utc};

/// Errors from talking to an exchange. Messages name the URL and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("{url}: the exchange banned this client (HTTP {status}) until {until}; not retrying")]
    Banned {
        url: String,
        status: u16,
        until: DateTime<Utc>,
    },
    /// The venue does not list the symbol: the message names both and the instrument id.
    #[error("{0}")]
    NotListed(String),
    #[error("malformed response from {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("invalid base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("simulated exchange: {0}")]
    Sim(String),
    #[error(transparent)]
    Model(#[from] cryptolake_model::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
