#![no_main]
//! Any configuration text, and any value of any setting's environment variable, loads to
//! settings or to an error that names the key: never a panic.

use libfuzzer_sys::fuzz_target;

const VARS: [&str; 14] = [
    "CRYPTOLAKE_INGEST_LOOKBACK",
    "CRYPTOLAKE_INGEST_CONCURRENCY",
    "CRYPTOLAKE_INGEST_REQUEST_TIMEOUT",
    "CRYPTOLAKE_INGEST_MAX_REFETCH_WINDOWS",
    "CRYPTOLAKE_SILVER_MANIFEST_OVERLAP",
    "CRYPTOLAKE_SCHEDULE_CRON",
    "CRYPTOLAKE_BINANCE_SYMBOLS",
    "CRYPTOLAKE_KRAKEN_WEIGHT_INTERVAL",
    "CRYPTOLAKE_COINBASE_WEIGHT_LIMIT",
    "CRYPTOLAKE_BINANCE_FUTURES_ENABLED",
    "CRYPTOLAKE_QUERY_MEMORY_LIMIT",
    "CRYPTOLAKE_QUERY_SPILL_LIMIT",
    "CRYPTOLAKE_QUERY_TIMEOUT",
    "CRYPTOLAKE_KRAKEN_MAX_RESPONSE_SIZE",
];

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = cryptolake_pipeline::Settings::from_toml(text, "fuzz", &[]);
    // The same bytes as the value of each variable.
    let selector = input.first().copied().unwrap_or(0) as usize % VARS.len();
    let env = vec![(VARS[selector].to_string(), text.to_string())];
    let _ = cryptolake_pipeline::Settings::from_toml("", "fuzz", &env);
});
