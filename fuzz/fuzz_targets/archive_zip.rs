#![no_main]
//! Any bytes as a data.binance.vision zip (a daily and a monthly name) unpack to the CSV or to
//! an error, never a panic or an abort, and never more than the period's bound of bytes:
//! lying zip64 and 32-bit size headers, bombs and broken central directories included.

use std::path::Path;

use cryptolake_lake::bronze::archive::{csv_bytes, parse_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for file in ["BTCUSDT-1m-2024-03-01.zip", "BTCUSDT-1m-2024-03.zip"] {
        let path = Path::new(file);
        let name = parse_name(path, None).expect("a valid name");
        let limit = name.max_csv_bytes();
        if let Ok((_, csv)) = csv_bytes(path, body.to_vec(), limit) {
            assert!(csv.len() as u64 <= limit);
        }
    }
});
