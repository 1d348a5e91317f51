#![no_main]
//! Any Bybit kline, instruments or funding body must parse to records or a page error, never panic,
//! for spot and linear alike.

use cryptolake_model::{Exchange, Symbol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USDT").expect("valid");
    for exchange in [Exchange::Bybit, Exchange::BybitLinear] {
        let _ = cryptolake_sources::bybit::parse_kline(exchange, body, &symbol);
    }
    let _ = cryptolake_sources::bybit::check_body(body);
    let _ = cryptolake_sources::bybit::parse_instruments(body);
    let _ = cryptolake_sources::bybit::parse_funding(body, &symbol);
});
