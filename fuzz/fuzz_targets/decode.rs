//! Token shape and header parsing, and bearer parsing, on arbitrary bytes: never a panic.
#![no_main]

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode::run(data));
