//! The part of OHLCV aggregation that minutes-to-hours and hours-to-days share.

/// Running extremes and sums over a group of candles, in time order. An amount is `None` for
/// the group as soon as one member lacks it: a partial sum would look complete.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rollup {
    pub high: f64,
    pub low: f64,
    pub volume: f64,
    pub quote_volume: Option<f64>,
    pub trade_count: Option<i64>,
}

impl Rollup {
    pub fn new() -> Rollup {
        Rollup {
            high: f64::MIN,
            low: f64::MAX,
            volume: 0.0,
            quote_volume: Some(0.0),
            trade_count: Some(0),
        }
    }

    pub fn add(
        &mut self,
        high: f64,
        low: f64,
        volume: f64,
        quote_volume: Option<f64>,
        trade_count: Option<i64>,
    ) {
        self.high = self.high.max(high);
        self.low = self.low.min(low);
        self.volume += volume;
        self.quote_volume = self.quote_volume.zip(quote_volume).map(|(a, b)| a + b);
        self.trade_count = self.trade_count.zip(trade_count).map(|(a, b)| a + b);
    }
}
