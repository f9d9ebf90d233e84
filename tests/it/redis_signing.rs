//! A Redis that others can write to: with `AUTHZ_REDIS_SIGNING_KEY_FILE`, replicas sign what
//! they share and ignore whatever is not signed with their key. Two real servers and Debian's
//! `redis-server`; a third party writes to Redis directly.
//!
//! Needs `redis-server` (the README's test command installs it); fails naming it when missing.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cognito_authz::server::{self, Running};
use cognito_authz::shared::CHANNEL;
use cognito_authz::testkit::{jwks, Behaviour, JwksServer, TestKey};
use common::{serve_config, Redis};

const ADMIN: &str = "signing-test-admin-secret";

fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn replica(idp: &JwksServer, url: &str, key: &str, admin: &str) -> Running {
    let vars = [
        ("AUTHZ_REDIS_URL", url),
        ("AUTHZ_REDIS_SIGNING_KEY_FILE", key),
        ("AUTHZ_ADMIN_TOKEN_FILE", admin),
    ];
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = common::http_get(running.admin_addr, "/readyz").await;
        if body.contains("redis: up") {
            return running;
        }
        assert!(Instant::now() < deadline, "redis never came up: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_only_what_is_signed_with_their_key() {
    assert!(
        std::path::Path::new("/usr/bin/redis-server").is_file(),
        "redis-server is missing: the README's test command installs it (Debian redis-server)"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("redis-signing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_redis, url) = Redis::start();
    let key = file(&dir, "signing-key", "0123456789abcdef0123456789abcdef0123");
    let admin = file(&dir, "admin-token", ADMIN);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let a = replica(&idp, &url, &key, &admin).await;
    let b = replica(&idp, &url, &key, &admin).await;

    // A revocation through A reaches B: signed and verified.
    let revoked = reqwest::Client::new()
        .post(format!("http://{}/revocations", a.admin_addr))
        .bearer_auth(ADMIN)
        .body(r#"{"jti": "through-the-api"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.authorizer().revocations().is_empty() {
        assert!(
            Instant::now() < deadline,
            "B never took A's signed revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Someone else who can write to Redis: an unsigned entry, and one signed with another key,
    // published and stored. Neither is taken, now or when a replica reloads the list.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let expires = cognito_authz::unix_now() + 3600;
    let unsigned = format!(
        r#"{{"revocation":{{"sub":{{"sub":"victim","before":{}}}}},"expires":{expires}}}"#,
        expires - 3600
    );
    let wrong_key = format!("{}.{unsigned}", "ab".repeat(32));
    for value in [&unsigned, &wrong_key] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("cognito-authz:rev:sub:victim")
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.authorizer().revocations().len(), 1, "only the signed one");
    let c = replica(&idp, &url, &key, &admin).await;
    assert_eq!(
        c.authorizer().revocations().len(),
        1,
        "loading from Redis takes only the signed one"
    );
    for r in [a, b, c] {
        r.stop().await.unwrap();
    }
}

/// Whoever holds the lock on asking Cognito about a token (another replica, or anyone who can
/// write to Redis) cannot make an old verdict good again: a replica waiting on the lock takes
/// only a verdict as fresh as the TTL, else asks Cognito itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_does_not_revive_a_stale_verdict() {
    use cognito_authz::testkit::{access_claims, now};
    use common::{Answer, CLIENT, ISS};
    let (_redis, url) = Redis::start();
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    // Cognito: this token's session was signed out.
    let get_user = JwksServer::start(Behaviour::Answer(
        400,
        serde_json::json!({"__type": "NotAuthorizedException", "message": "Access Token has been revoked"}),
    ))
    .await;
    let endpoint = get_user.url("/");
    let vars = [
        ("AUTHZ_REDIS_URL", url.as_str()),
        ("COGNITO_REVOCATION", "cognito"),
        ("COGNITO_IDP_ENDPOINT", endpoint.as_str()),
        ("COGNITO_REVOCATION_TTL_SECONDS", "2"),
        ("COGNITO_REVOCATION_GRACE_SECONDS", "600"),
    ];
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::http_get(running.admin_addr, "/readyz")
        .await
        .1
        .contains("redis: up")
    {
        assert!(Instant::now() < deadline, "redis never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let key: String = cognito_authz::cache::token_key(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // A lock nobody releases and a `valid` verdict 100 s old (past the TTL, within the grace).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, value) in [
        (format!("cognito-authz:lock:{key}"), "x".to_string()),
        (
            format!("cognito-authz:verdict:{key}"),
            format!("valid:{}", now() - 100),
        ),
    ] {
        let _: () = redis::cmd("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let cognito_authz::server::GrpcAddr::Tcp(addr) = running.grpc_addr.clone() else {
        unreachable!()
    };
    match common::check_bearer(addr, &token).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!((status, body["reason"].as_str()), (401, Some("revoked")));
        }
        other => panic!("a stale verdict let a signed-out token through: {other:?}"),
    }
    assert_eq!(get_user.hits(), 1, "asked Cognito itself");
    running.stop().await.unwrap();
}
