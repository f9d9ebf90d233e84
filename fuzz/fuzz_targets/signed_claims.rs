//! Arbitrary header and payload bytes, validly signed with a key the store trusts, through the
//! whole verifier: the checks behind the signature see hostile claims. Never a panic; anything
//! accepted really is a Cognito-shaped token of the configured pool and client.
#![no_main]

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::signed_claims::run(data));
