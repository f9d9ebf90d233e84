//! Arbitrary bytes as Envoy's CheckRequest through the authorizer: never a panic, never a
//! header both set and removed, never identity without a token.
#![no_main]

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::check::run(data));
