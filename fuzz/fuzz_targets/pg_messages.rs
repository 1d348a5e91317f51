#![no_main]
//! Any bytes a client sends over the PostgreSQL protocol, in each phase of a connection
//! (before the startup message, while signing in, signed in), decode to messages or to a
//! protocol error that ends the connection: never a panic that gets out.

use cryptolake_server::pg::{Phase, decode_messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // A panic caught as the server catches it is not a crash here: the hook that libFuzzer
    // installs would abort on it before it is caught.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&selector, bytes)) = input.split_first() else {
        return;
    };
    let phase = match selector % 3 {
        0 => Phase::Startup,
        1 => Phase::SigningIn,
        _ => Phase::SignedIn,
    };
    let decoded = decode_messages(bytes, phase);
    // Anything after an error was not read.
    if let Some(i) = decoded.iter().position(|r| r.is_err()) {
        assert_eq!(i + 1, decoded.len());
    }
});
