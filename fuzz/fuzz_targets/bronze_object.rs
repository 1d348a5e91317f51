#![no_main]
//! Any object under bronze/ must decode and parse to records or a clear error, never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Ok((envelope, payload)) = cryptolake_lake::bronze::decode("bronze/fuzz.bronze", &bytes) {
        let _ = cryptolake_lake::bronze::parse_payload(&envelope, &payload);
    }
});
