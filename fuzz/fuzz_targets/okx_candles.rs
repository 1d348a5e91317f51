#![no_main]
//! Any OKX candles, instruments or funding body must parse to records or a page error, never panic,
//! for spot and swaps alike.

use cryptolake_model::{Exchange, Symbol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USDT").expect("valid");
    for exchange in [Exchange::Okx, Exchange::OkxSwap] {
        let _ = cryptolake_sources::okx::parse_candles(exchange, body, &symbol);
    }
    let _ = cryptolake_sources::okx::check_body(body);
    let _ = cryptolake_sources::okx::parse_instruments(body);
    let _ = cryptolake_sources::okx::parse_funding(body, &symbol);
});
