//! The fuzz targets' bodies, shared by the live fuzzer (`fuzz/fuzz_targets/`, libFuzzer) and the
//! replay of the committed corpus and regressions in the ordinary test build (`tests/it/fuzz_replay.rs`).
// Each fuzz binary and the replay test use only some of the items.
#![allow(dead_code)]

pub mod check;
pub mod common;
pub mod decode;
pub mod signed_claims;
