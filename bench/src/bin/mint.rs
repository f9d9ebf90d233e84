//! Mints the benchmark's tokens with a key it generates: `mint DIR N` writes DIR/jwks.json,
//! DIR/valid-1.txt (one token), DIR/valid-N.txt (N distinct tokens), DIR/invalid.txt (a token
//! whose signature does not verify) and DIR/pool.json (issuer, pool id, client id).

use std::fmt::Write as _;

use cognito_authz::testkit::{access_claims, jwks, now, TestKey};

const POOL: &str = "us-east-1_BenchPool";
const CLIENT: &str = "bench-client";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: mint DIR N")?);
    let n: usize = args.next().ok_or("usage: mint DIR N")?.parse()?;
    std::fs::create_dir_all(&dir)?;
    let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}");
    let key = TestKey::generate("bench-kid-1");
    std::fs::write(dir.join("jwks.json"), jwks(&[&key]).to_string())?;
    std::fs::write(
        dir.join("pool.json"),
        serde_json::json!({"pool_id": POOL, "client_id": CLIENT, "issuer": issuer}).to_string(),
    )?;
    let iat = now();
    let token = |i: usize| {
        let mut claims = access_claims(&issuer, CLIENT, iat);
        claims["jti"] = serde_json::json!(format!("bench-{i}"));
        claims["exp"] = serde_json::json!(iat + 6 * 3600);
        key.token(&claims)
    };
    std::fs::write(dir.join("valid-1.txt"), token(0) + "\n")?;
    // Signing costs about 0.25 ms a token: use both cores.
    let halves: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|part| {
                let token = &token;
                s.spawn(move || {
                    let mut out = String::new();
                    for i in (part..n).step_by(2) {
                        let _ = writeln!(out, "{}", token(i + 1));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("minting thread"))
            .collect()
    });
    std::fs::write(dir.join(format!("valid-{n}.txt")), halves.concat())?;
    let good = token(0);
    let (message, _) = good.rsplit_once('.').ok_or("three parts")?;
    let forged = format!("{message}.{}", cognito_authz::testkit::b64(&[7u8; 256]));
    std::fs::write(dir.join("invalid.txt"), forged + "\n")?;
    Ok(())
}
