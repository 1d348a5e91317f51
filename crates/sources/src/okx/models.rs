//! OKX's own wire types.

use serde::Deserialize;

/// Every OKX REST answer: `{"code": "0", "msg": "", "data": [...]}`; an error has another
/// `code`, on HTTP 200 as often as not.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// One candle: `[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`, all strings.
#[derive(Debug, Deserialize)]
pub struct RawCandle(
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
);

/// One instrument of `GET /api/v5/public/instruments` (the fields read).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instrument {
    pub inst_id: String,
    #[serde(default)]
    pub state: String,
    /// Milliseconds, as a string; empty for some instruments.
    #[serde(default)]
    pub list_time: String,
}
