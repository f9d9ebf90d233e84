//! The fuzz targets' own bodies over every committed input, in the ordinary test build: the
//! minimised corpus (`fuzz/seeds/TARGET`) and every input that ever found a defect
//! (`fuzz/regressions/TARGET`). Seconds, where the live fuzzer (`fuzz/run`) needs an
//! instrumented build and minutes; a regression found there stays found here.

#[path = "../../fuzz/targets/mod.rs"]
mod targets;

use std::path::{Path, PathBuf};

/// Every file under `fuzz/{seeds,regressions}/TARGET`, sorted so a failure names the same
/// input each run.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        found.extend(dir.map(|entry| entry.expect("a corpus entry").path()));
    }
    found.sort();
    found
}

/// Runs `body` over every committed input of `target`; at least `min` of them, so an emptied or
/// moved corpus fails here instead of replaying nothing.
fn replay(target: &str, min: usize, body: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= min,
        "fuzz/seeds/{target}: {} committed inputs, expected at least {min}",
        inputs.len()
    );
    for input in inputs {
        let data = std::fs::read(&input).expect("a committed input");
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{} fails its target", input.display());
    }
}

#[test]
fn decode_replays_its_corpus() {
    replay("decode", MIN_INPUTS, targets::decode::run);
}

#[test]
fn signed_claims_replays_its_corpus() {
    replay("signed_claims", MIN_INPUTS, targets::signed_claims::run);
}

#[test]
fn check_replays_its_corpus() {
    replay("check", MIN_INPUTS, targets::check::run);
}

/// Fewer than the minimised corpora hold (544 to 1,280 each at the last `fuzz/run --minimize`):
/// a floor, not a count.
const MIN_INPUTS: usize = 500;

/// The replay can fail: an input a target's assertion rejects is reported.
#[test]
#[should_panic(expected = "fails its target")]
fn a_failing_input_fails_the_replay() {
    replay("decode", 1, |_| panic!("an assertion of the target"));
}
