#![no_main]
//! Any data.binance.vision kline CSV must parse to records or an error, never panic.

use cryptolake_model::{Exchange, Symbol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USDT").expect("valid");
    let _ = cryptolake_sources::binance::archive::parse_csv(Exchange::Binance, body, &symbol);
});
