#![no_main]
//! Any Kraken OHLC body must parse to records or a page error, never panic; pair names too.

use cryptolake_model::Symbol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let symbol = Symbol::parse("BTC-USD").expect("valid");
    let _ = cryptolake_sources::kraken::parse_ohlc(body, &symbol);
    let _ = cryptolake_sources::kraken::check_body(body);
    if let Ok(name) = std::str::from_utf8(body) {
        let _ = cryptolake_sources::kraken::symbol_for_pair(name);
    }
});
