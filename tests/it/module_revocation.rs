//! Revocation without a sidecar: `cognito-authz revoke --redis` writes the entry a replica's
//! control API would, straight to the shared Redis. Two Envoys running the module and one
//! sidecar replica share one Debian `redis-server` and one signing key file; a third Envoy starts
//! afterwards. Judged by what each one answers.

use crate::common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cognito_authz::shared::CHANNEL;
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use cruddur_demo::stack::{Options, Ports, Protocol, Stack};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_cognito-authz");

/// Where a token is checked: an Envoy running the module (its ingress port), or the sidecar
/// replica (its gRPC port).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Checker {
    Module(u16),
    Sidecar(u16),
}

/// (status, reason) for `token` on a route that requires one; 200 when it is let through.
pub(crate) async fn check(at: Checker, token: &str) -> (u16, String) {
    match at {
        Checker::Module(port) => {
            let seen = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/elsewhere"))
                .bearer_auth(token)
                .send()
                .await
                .expect("Envoy answers");
            let status = seen.status().as_u16();
            let body: serde_json::Value = seen.json().await.unwrap_or_default();
            match status {
                // Let through: the app has no such page.
                404 => (200, String::new()),
                _ => (status, body["reason"].as_str().unwrap_or("").to_string()),
            }
        }
        Checker::Sidecar(port) => {
            let auth = format!("Bearer {token}");
            let channel = common::channel(([127, 0, 0, 1], port).into()).await;
            let response = AuthorizationClient::new(channel)
                .check(common::check_request(
                    "GET",
                    "/elsewhere",
                    &[("authorization", &auth)],
                    &[("cognito_authz.mode", "required")],
                ))
                .await
                .expect("Check answers")
                .into_inner();
            match common::answer(&response) {
                common::Answer::Allowed { .. } => (200, String::new()),
                common::Answer::Denied { status, body, .. } => (
                    u16::try_from(status).unwrap_or(0),
                    body["reason"].as_str().unwrap_or("").to_string(),
                ),
            }
        }
    }
}

/// Waits until `at` holds keys (no more 503), then asserts its first answer is `want`.
pub(crate) async fn first_answer_is(at: Checker, token: &str, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, reason) = check(at, token).await;
        if status != 503 {
            assert_eq!((status, reason.as_str()), want, "{at:?}");
            return;
        }
        assert!(Instant::now() < deadline, "{at:?} never held keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `at` until it refuses `token` as revoked, within `within` of `since`.
pub(crate) async fn refused_within(at: Checker, token: &str, since: Instant, within: Duration) {
    loop {
        let (status, reason) = check(at, token).await;
        if (status, reason.as_str()) == (401, "revoked") {
            return;
        }
        assert!(
            since.elapsed() < within,
            "{at:?} still answers {status} {reason} {:?} after the revocation",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribers of the revocation channel, as Redis counts them.
fn subscribers(url: &str) -> i64 {
    let mut redis = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("the stack's Redis answers");
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query(&mut redis)
        .expect("PUBSUB NUMSUB");
    counts.first().map_or(0, |(_, n)| *n)
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("run cognito-authz");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        command.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_in_redis_reaches_every_module_and_sidecar_and_a_module_started_later() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let layout = common::stack_layout("module-revoke");
    assert!(
        layout.bin_dir.join("libcognito_authz_envoy.so").exists(),
        "the module is missing: build it with `cargo build -p cognito-authz-envoy`"
    );
    std::fs::create_dir_all(&layout.work_dir).unwrap();
    // Two keys, as during a rotation: every writer signs with both.
    let keys = layout.work_dir.join("signing-keys");
    std::fs::write(
        &keys,
        "0123456789abcdef0123456789abcdef01\nfedcba9876543210fedcba9876543210fe\n",
    )
    .unwrap();
    let keys = keys.display().to_string();
    let options = Options {
        protocol: Protocol::Module,
        redis: true,
        authz_env: vec![
            ("COGNITO_JWKS_URI".into(), idp.url("/jwks.json")),
            ("AUTHZ_REDIS_SIGNING_KEY_FILE".into(), keys.clone()),
        ],
        ..Options::default()
    };
    let mut stack = Stack::start_options(layout, Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let second = stack.start_module_envoy().await.unwrap();
    let sidecar = stack.add_replica().unwrap();
    stack.start_replica(sidecar).await.unwrap();
    let replica = stack.replicas[sidecar];
    crate::revocation::wait_redis(replica.admin, true).await;
    let redis_url = format!("redis://127.0.0.1:{}/", stack.redis_port.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscribers(&redis_url) < 3 {
        assert!(
            Instant::now() < deadline,
            "the modules and the sidecar never all followed Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let everywhere = [
        Checker::Module(stack.ports.envoy),
        Checker::Module(second),
        Checker::Sidecar(replica.grpc),
    ];

    // Three users' tokens: one revoked through Redis, one through the sidecar, one never.
    let issuer = format!(
        "https://cognito-idp.us-east-1.amazonaws.com/{}",
        stack.pool.pool_id
    );
    let token = |user: &str| {
        let mut claims = access_claims(&issuer, &stack.pool.client_id, now() - 30);
        claims["sub"] = json!(format!("{user}-sub"));
        claims["origin_jti"] = json!(format!("{user}-session"));
        claims["jti"] = json!(format!("{user}-jti"));
        TestKey::shared(0).token(&claims)
    };
    let (by_redis, by_sidecar, kept) = (token("redis"), token("sidecar"), token("kept"));
    for at in everywhere {
        for t in [&by_redis, &by_sidecar, &kept] {
            first_answer_is(at, t, (200, "")).await;
        }
    }

    // 1. Straight to Redis, the token's session, with the settings `serve` reads (the URL and
    // the signing keys from the variables): every module and the sidecar refuse it within 1 s.
    let dir = stack.layout.work_dir.clone();
    std::fs::write(dir.join("token.txt"), &by_redis).unwrap();
    let out = run(Command::new(BIN)
        .args(["revoke", "--redis", "--token-file"])
        .arg(dir.join("token.txt"))
        .env_clear()
        .env("AUTHZ_REDIS_URL", &redis_url)
        .env("AUTHZ_REDIS_SIGNING_KEY_FILE", &keys));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&answer["recorded"], &answer["shared"]),
        (&json!(true), &json!(true))
    );
    let revoked_at = Instant::now();
    for at in everywhere {
        refused_within(at, &by_redis, revoked_at, Duration::from_secs(1)).await;
    }

    // 2. Through the sidecar's control API, one user: both modules refuse it within 1 s.
    let out = run(Command::new(BIN)
        .args(["revoke", "--admin"])
        .arg(format!("http://127.0.0.1:{}", replica.admin))
        .args(["--sub", "sidecar-sub", "--admin-token-file"])
        .arg(stack.admin_token_file().unwrap())
        .env_clear());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"shared\":true"));
    let revoked_at = Instant::now();
    for at in everywhere {
        refused_within(at, &by_sidecar, revoked_at, Duration::from_secs(1)).await;
    }
    for at in everywhere {
        assert_eq!(
            check(at, &kept).await.0,
            200,
            "{at:?} refused a token nobody revoked"
        );
    }

    // 3. A module started afterwards replays both from Redis: it never admits either.
    let third = Checker::Module(stack.start_module_envoy().await.unwrap());
    first_answer_is(third, &by_redis, (401, "revoked")).await;
    first_answer_is(third, &by_sidecar, (401, "revoked")).await;
    first_answer_is(third, &kept, (200, "")).await;
}
