#![no_main]
//! Any Coinbase candles body must parse to records or a page error, never panic.

use cryptolake_model::Symbol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USD").expect("valid");
    let _ = cryptolake_sources::coinbase::parse_candles(body, &symbol);
    let _ = cryptolake_sources::http::row_heads(body);
});
