//! `cargo bench --bench verify`: token verification without any cache, on one core, next to
//! OpenSSL's raw RSA-2048 verify rate measured in the same run.
//!
//! The machine is shared and noisy, so the measurements are interleaved: each round runs
//! `openssl speed -seconds 1 rsa2048`, then each of our candidates for one second, and the
//! report gives medians over the rounds and their ratios to OpenSSL's median.
//!
//! Candidates: the full `Verifier` (shape, header, issuer, key, signature, claims), the bare
//! signature check with our pre-parsed key (the floor), and `jsonwebtoken::decode` with a key
//! built from the JWK (the obvious alternative, which re-parses the RSA key on every call).

use std::process::Command;
use std::time::{Duration, Instant};

use cognito_authz::config::Config;
use cognito_authz::jwks::{KeyStore, VerificationKey};
use cognito_authz::testkit::{access_claims, jwks, now, TestKey};

const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_BenchPool";
const ROUND: Duration = Duration::from_secs(1);

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Runs `f` repeatedly for about `ROUND` and returns operations per second.
fn rate(mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < ROUND {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn openssl_verify_rate() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "1", "-mr", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `+F2:<n>:2048:<sign/s>:<verify/s>`
    let line = text.lines().find(|l| l.starts_with("+F2:"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Run as a test (`cargo test`, `cargo nextest`), a bench is one quick pass.
    let quick = match cognito_authz::testkit::bench_run() {
        cognito_authz::testkit::BenchRun::Listed => return,
        cognito_authz::testkit::BenchRun::Quick => true,
        cognito_authz::testkit::BenchRun::Full => false,
    };
    let key = TestKey::shared(0);
    let vars = [
        ("AWS_COGNITO_USER_POOL_ID", "us-east-1_BenchPool"),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", "bench-client"),
    ];
    let config = Config::from_lookup(
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        },
        None,
    )
    .expect("bench configuration");
    let store = KeyStore::new(&config.pools, &config.jwks).expect("key store");
    store
        .preload(0, jwks(&[key]).to_string().as_bytes())
        .expect("preload");
    let verifier = config.verifier(store);
    let token = key.token(&access_claims(ISS, "bench-client", now()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime
        .block_on(verifier.verify(&token))
        .expect("the bench token verifies");

    let (n, e) = key.components();
    let parsed = VerificationKey::from_components(&key.kid, &n, &e).expect("key");
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let signature = cognito_authz::testkit::b64_decode(signature);

    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).expect("jwk");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[ISS]);
    validation.validate_aud = false;

    if quick {
        assert!(parsed.verify_rs256(message.as_bytes(), &signature));
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .expect("jsonwebtoken accepts the token");
        println!("verify bench: quick pass ok (run `cargo bench --bench verify` to measure)");
        return;
    }

    let (mut ssl, mut ours, mut floor, mut jwt) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds() {
        match openssl_verify_rate() {
            Some(r) => ssl.push(r),
            None => {
                eprintln!("`openssl speed` is not available: no baseline, no ratio");
                std::process::exit(1);
            }
        }
        ours.push(rate(|| {
            runtime.block_on(verifier.verify(&token)).expect("valid");
        }));
        floor.push(rate(|| {
            assert!(parsed.verify_rs256(message.as_bytes(), &signature));
        }));
        jwt.push(rate(|| {
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
                .expect("valid");
        }));
        eprintln!(
            "round {round}: openssl {:.0}/s, verifier {:.0}/s, signature only {:.0}/s, jsonwebtoken {:.0}/s",
            ssl[round], ours[round], floor[round], jwt[round]
        );
    }
    let base = median(ssl.clone());
    println!(
        "\nRSA-2048 token verification, one core, no cache (medians of {} interleaved rounds)",
        ssl.len()
    );
    println!(
        "{:<38} {:>12} {:>14}",
        "candidate", "verifies/s", "vs openssl"
    );
    for (name, values) in [
        ("openssl speed rsa2048 (verify)", ssl),
        ("cognito-authz Verifier::verify", ours),
        ("signature only (pre-parsed key)", floor),
        ("jsonwebtoken::decode (from_jwk)", jwt),
    ] {
        let m = median(values);
        println!("{name:<38} {m:>12.0} {:>13.1}%", 100.0 * m / base);
    }
}
