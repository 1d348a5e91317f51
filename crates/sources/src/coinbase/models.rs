//! Coinbase's own wire types.

use serde::Deserialize;

/// One candle as Coinbase sends it: `[time, low, high, open, close, volume]`, all numbers,
/// the time in seconds.
#[derive(Debug, Deserialize)]
pub struct RawCandle(pub i64, pub f64, pub f64, pub f64, pub f64, pub f64);

/// Coinbase's error body: `{"message": "NotFound"}`.
#[derive(Debug, Deserialize)]
pub struct ApiError {
    pub message: String,
}
