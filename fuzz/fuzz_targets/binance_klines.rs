#![no_main]
//! Any body must parse to records or a page error, never panic: klines and funding rates.

use cryptolake_model::Symbol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USDT").expect("valid");
    let _ = cryptolake_sources::binance::parse_klines(body, &symbol);
    let _ = cryptolake_sources::binance::parse_funding(body, &symbol);
});
